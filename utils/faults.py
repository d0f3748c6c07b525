"""Fault injection for the crash-consistency tests: where the process can be made to die, or the disk to fill up.

``crash_point(name)`` ends the process at once (as SIGKILL would: no cleanup, no flush) when the environment variable
``PRMLOOP_CRASH_AT`` equals ``name``; otherwise it does nothing. The code calls it between the steps of every commit
and directory swap, so a test can kill a run exactly there and check that ``--resume`` recovers.

``write(handle, data, path)`` is how the JSONL writers write: when ``PRMLOOP_DISK_FULL`` is a glob matching the
file's name, it writes half of ``data`` and raises ENOSPC, as a disk that fills up mid-write does.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from pathlib import Path
from typing import IO

CRASH_ENV = "PRMLOOP_CRASH_AT"
DISK_FULL_ENV = "PRMLOOP_DISK_FULL"


def crash_point(name: str) -> None:
    """Die here (exit status 137) if PRMLOOP_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)


def write(handle: IO[bytes] | IO[str], data: bytes | str, path: str | Path) -> None:
    """``handle.write(data)``, or half of it and then ENOSPC if PRMLOOP_DISK_FULL matches ``path``'s name."""
    pattern = os.environ.get(DISK_FULL_ENV)
    if pattern and fnmatch.fnmatch(Path(path).name, pattern):
        handle.write(data[: len(data) // 2])  # type: ignore[arg-type]
        handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    handle.write(data)  # type: ignore[arg-type]
