"""prmloop: process reward models with an iterative GRPO loop.

The repository root is the package: ``prmloop.data`` is ``data/``, ``prmloop.prm`` is ``prm/``, ``prmloop.policy`` is
``policy/``, ``prmloop.loop`` is ``loop/`` and ``prmloop.utils`` is ``utils/`` (pyproject.toml's package-dir). Inside
the package, imports are relative, so each one names the file it reads from. Imports flow one way:
``utils`` <- ``data`` <- ``prm``, ``policy`` <- ``loop``; ``prm`` and ``policy`` never import each other.
"""

__version__ = "0.1.0"
