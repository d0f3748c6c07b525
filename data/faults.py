"""Fault injection for the crash-consistency tests: a named point where the process can be made to die.

``crash_point(name)`` ends the process at once (as SIGKILL would: no cleanup, no flush) when the environment variable
``PRMLOOP_CRASH_AT`` equals ``name``; otherwise it does nothing. The code calls it between the steps of every commit
and directory swap, so a test can kill a run exactly there and check that ``--resume`` recovers.
"""

from __future__ import annotations

import os

CRASH_ENV = "PRMLOOP_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here (exit status 137) if PRMLOOP_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)
