"""prmloop: process reward models with an iterative GRPO loop.

The installed package is ``prmloop``; its parts live in the repository's top-level folders and install as
``prmloop.data``, ``prmloop.prm``, ``prmloop.policy`` and ``prmloop.loop`` (see pyproject.toml's package-dir).
This folder only holds the package's own ``__init__`` and ``__main__`` (``python -m prmloop ...``).
"""

__version__ = "0.1.0"
