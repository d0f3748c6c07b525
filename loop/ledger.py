"""Durable run state: which stages finished, and how long each append-only file was when they did.

A run directory's ``state.json`` is rewritten atomically (temp file + rename) after every stage. It records the
completed stage names and, for each append-only JSONL file of the run, its committed size in bytes. On resume,
``restore()`` truncates every append-only file back to its committed size, so rows written by a stage that was
killed half-way are dropped before the stage runs again: no row is lost (committed rows stay) and none is
duplicated (uncommitted ones go). Directories (checkpoints) are saved under a temporary name and renamed into place,
so a checkpoint either exists whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.faults import crash_point
from ..utils.jsonl import atomic_write_text, replace_dir


class Ledger:
    """Stage bookkeeping for one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | Path, append_only: list[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "state.json"
        self.append_only = append_only
        self.completed: list[str] = []
        self.sizes: dict[str, int] = {}
        self.info: dict[str, Any] = {}
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
                self.completed, self.sizes, self.info = state["completed"], state["sizes"], state.get("info", {})
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{self.path}: not a valid run state file; remove the run directory to start over") from None

    def done(self, stage: str) -> bool:
        return stage in self.completed

    def restore(self) -> dict[str, int]:
        """Truncate append-only files to their committed sizes; returns bytes dropped per file."""
        dropped = {}
        for name in self.append_only:
            path = self.run_dir / name
            if not path.exists():
                continue
            committed = self.sizes.get(name, 0)
            size = path.stat().st_size
            if size > committed:
                with path.open("r+b") as handle:
                    handle.truncate(committed)
                    handle.flush()
                    os.fsync(handle.fileno())
                dropped[name] = size - committed
        return dropped

    def commit(self, stage: str, **info: Any) -> None:
        """Mark ``stage`` done, record the append-only files' current sizes, and save state.json atomically."""
        for name in self.append_only:
            path = self.run_dir / name
            self.sizes[name] = path.stat().st_size if path.exists() else 0
        if stage not in self.completed:
            self.completed.append(stage)
        self.info.update(info)
        state = {"completed": self.completed, "sizes": self.sizes, "info": self.info}
        crash_point(f"commit:{stage}")  # the stage's outputs are written, its commit is not
        atomic_write_text(self.path, json.dumps(state, indent=1))


def save_dir_atomically(path: str | Path, save: Callable[[Path], None]) -> Path:
    """Call ``save(tmp_dir)`` and put the directory in place of ``path`` (``data.jsonl.replace_dir``): whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    return replace_dir(tmp, path)
