"""JSONL reading with row-numbered errors, and atomic writes (temp file + rename) so a kill never leaves a partial file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import faults
from .errors import UserError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` for each non-blank line of ``path``; row numbers are 1-based line numbers.

    A missing file or a line that is not a JSON object raises UserError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            yield line_number, row


def dumps_row(row: dict[str, Any]) -> str:
    """One JSONL line, keys in insertion order, no trailing newline; stable so equal inputs give equal bytes."""
    return json.dumps(row, ensure_ascii=False, separators=(", ", ": "))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader (or a crash) sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            faults.write(handle, text, path)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write ``rows`` as JSONL; returns how many rows were written."""
    lines = [dumps_row(row) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def append_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Append ``rows`` to ``path`` (created if absent) as one write() + flush + fsync; returns how many rows.

    The rows go in one write of whole lines, so a crash leaves at most one torn (unterminated) last line, which
    ``read_jsonl_tolerant`` skips and ``truncate_torn_tail`` removes. Appending after a torn line would glue the new row
    onto it, so a file whose last byte is not a newline is a UserError: call ``truncate_torn_tail`` first (resume does).
    """
    path = Path(path)
    payload = "".join(dumps_row(row) + "\n" for row in rows).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end > 0:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                raise UserError(f"{path}: last line is torn (no trailing newline); truncate_torn_tail() it before appending")
        if payload:
            faults.write(handle, payload, path)
            handle.flush()
            os.fsync(handle.fileno())
    return payload.count(b"\n")


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in one raw line, or None when it is not valid UTF-8, not JSON, or not an object."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def _split_tail(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete (newline-terminated) lines, and the unterminated rest (b"" when the data ends with a newline)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut].split(b"\n")[:-1], data[cut:]


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """All rows of an append-only JSONL file, skipping a torn last line left by a crash mid-append.

    Torn means: the last line has no trailing newline and is not a complete JSON object (a killed writer). An
    unterminated last line that IS a complete object is kept (only its newline was lost). A bad line anywhere else is
    real damage: UserError naming ``file:line``. Blank lines are skipped; a missing file is a UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    lines, tail = _split_tail(path.read_bytes())
    rows: list[dict[str, Any]] = []
    for line_number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row = _parse_object(raw)
        if row is None:
            raise UserError(f"{path}:{line_number}: not a valid JSON object line (only a torn last line is skipped)")
        rows.append(row)
    if tail.strip():
        row = _parse_object(tail)
        if row is not None:
            rows.append(row)
    return rows


def truncate_torn_tail(path: str | Path) -> int:
    """Make ``path`` safe to append to again: cut a torn last line off in place; returns the bytes removed.

    Same rule as ``read_jsonl_tolerant``: an unterminated last line that is a complete JSON object gets its newline
    back instead (nothing removed, returns 0), so reading before and after gives the same rows. A missing file is
    left missing (returns 0), so a fresh run and a resumed run can both call this.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    _, tail = _split_tail(path.read_bytes())
    if not tail:
        return 0
    with path.open("r+b") as handle:
        if tail.strip() and _parse_object(tail) is not None:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
            removed = 0
        else:
            handle.truncate(path.stat().st_size - len(tail))
            removed = len(tail)
        handle.flush()
        os.fsync(handle.fileno())
    return removed


def replace_dir(staging: str | Path, target: str | Path, crash_name: str = "") -> Path:
    """Put the fully written directory ``staging`` in place of ``target`` (whole or absent, never mixed).

    Steps: a leftover ``.<name>.old`` from a killed run is removed; ``target`` (if any) is renamed to it; ``staging`` is
    renamed to ``target``; the old copy is removed. A kill between the two renames leaves only the old copy, which
    ``recover_dir`` puts back."""
    staging, target = Path(staging), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
        faults.crash_point(f"swap:{crash_name or target.name}")
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def recover_dir(target: str | Path) -> None:
    """After a kill inside ``replace_dir``: bring back the old copy if the new one never arrived."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        os.replace(old, target)
