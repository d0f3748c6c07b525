"""``python -m prmloop ...`` (and ``accelerate launch -m prmloop ...``): the same CLI as the ``prmloop`` command."""

import sys

from .loop.cli import main

if __name__ == "__main__":
    sys.exit(main())
