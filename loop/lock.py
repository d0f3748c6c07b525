"""One run per output directory: an exclusive advisory lock (fcntl) on a lock file, released on any exit.

``exclusive(dir)`` refuses at once when another process holds ``dir``'s lock, naming that process's pid (a second
`prmloop demo --out D` never mixes its rows into a running one). ``waiting(file)`` waits for the holder instead (two
runs sharing a fresh SFT cache entry: the second reuses what the first trained). The OS drops a lock when its process
ends, however it ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..utils.errors import UserError

LOCK_NAME = ".prmloop.lock"


def _holder(handle) -> str:
    handle.seek(0)
    text = handle.read().strip()
    return text or "unknown"


def _open(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a+", encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot create the run lock ({err.strerror or type(err).__name__})") from None


def _claim(handle) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()


@contextlib.contextmanager
def exclusive(directory: str | Path) -> Iterator[None]:
    """Hold ``directory``'s run lock for the block; UserError naming the holder's pid if another run has it.

    Under ``accelerate launch`` only rank 0 takes it (the ranks of one run share their output directory)."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    path = Path(directory) / LOCK_NAME
    handle = _open(path)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{directory}: in use by another prmloop run (pid {_holder(handle)}); wait for it to end "
                            "or choose another --out") from None
        _claim(handle)
        yield
    finally:
        handle.close()  # closing releases the lock


@contextlib.contextmanager
def waiting(path: str | Path, log=print) -> Iterator[None]:
    """Hold the lock file ``path`` for the block, waiting (and saying so) while another process holds it."""
    path = Path(path)
    handle = _open(path)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{path.parent}: waiting for pid {_holder(handle)}, which is preparing the same entry")
            fcntl.flock(handle, fcntl.LOCK_EX)
        _claim(handle)
        yield
    finally:
        handle.close()
