"""Load a named dataset format from a hub name or a local JSON/JSONL/parquet file into the one schema; convert to TRL.

Sources: a path ending in ``.json``, ``.jsonl`` or ``.parquet`` (or any existing path) is a local file; anything else
is a hub dataset name, read with ``datasets.load_dataset(name, subset, split=split)`` (``openai/gsm8k`` defaults to
subset ``main``). Local parquet is read with ``datasets.load_dataset("parquet", ...)``. Local JSON is read with Python's
``json``, not ``datasets``: its JSON reader gives a column of mixed types one ``Json`` type that turns the string
``"1"`` into the number 1 and ``NaN`` into null, so a bad value would pass as a good one. A ``.json``/``.jsonl`` file
whose first character is ``[`` is one JSON array; any other is JSON lines, read one line at a time.

Rows: each row is parsed by its format's parser (``data.formats.ROW_PARSERS``; rules for labels there). A bad row
raises ``UserError("train.jsonl:12: ...")`` naming the file and 1-based row (the line number in a JSON lines file; the
record number otherwise). A row that cannot be read (not valid JSON, text that is not UTF-8) is a bad row too. With
``skip_bad=True`` bad rows are skipped and counted instead. ``n_skipped`` also counts well-formed rows that hold
nothing to convert (PRM800K ``bad_problem`` rows, or rows with no rated step).

Converting writes TRL stepwise JSONL ``{prompt, completions, labels, **meta}`` atomically (temp file + rename): a
failure leaves any previous output file untouched. Problem-only formats (GSM8K, MATH) write their reference solution
steps, all labelled True (reference solutions are taken as correct), with meta ``{id, answer}``; a problem without
reference steps is a bad row for conversion.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from ..utils.errors import UserError
from ..utils.hub import require_hub
from ..utils.jsonl import write_jsonl
from .formats import OPTION_CHOICES, ROW_PARSERS, BadRow, RowParser
from .schema import Problem, StepwiseExample

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""Local file suffix -> how it is read: ``json`` by Python's json module, ``parquet`` by ``datasets``."""
HUB_SUBSETS = {"openai/gsm8k": "main", "gsm8k": "main"}
"""Hub datasets that need a subset (config) name, and the one used when none is given."""
_ROW_ERRORS = (BadRow, KeyError, TypeError, AttributeError, IndexError)
"""What a parser raises on a row of the wrong shape (beyond its own BadRow checks)."""

Item = Problem | StepwiseExample
Rows = Iterator[tuple[str, Any]]
"""(where, row) pairs; ``where`` is ``file:row``; a row that could not even be read is a BadRow instance."""


def format_names() -> list[str]:
    """The valid format names, sorted."""
    return sorted(ROW_PARSERS)


def format_name(format: str) -> str:
    """The registered name of ``format`` (any case, ``-`` for ``_``); UserError listing the valid names if unknown."""
    name = format.lower().replace("-", "_")
    if name not in ROW_PARSERS:
        raise UserError(f"unknown data format '{format}'; valid formats: {', '.join(format_names())}")
    return name


def load(
    format: str,
    source: str | Path,
    split: str = "train",
    *,
    subset: str | None = None,
    skip_bad: bool = False,
    **options: Any,
) -> tuple[list[Item], int]:
    """Read ``source`` in ``format`` -> (problems or stepwise examples, number of rows skipped).

    ``options`` go to the format's parser (e.g. ``neutral_as="negative"`` for ``prm800k``); unknown ones are a
    UserError. GSM8K and MATH give ``Problem``s; the other formats give ``StepwiseExample``s.
    """
    name = format_name(format)
    parser = _bind_options(name, ROW_PARSERS[name], options)
    return _parse_rows(parser, iter_rows(source, split, subset), f"{name}-{split}", skip_bad, as_stepwise=False)


def convert(
    format: str,
    source: str | Path,
    out_path: str | Path,
    skip_bad: bool = False,
    *,
    split: str = "train",
    subset: str | None = None,
    **options: Any,
) -> tuple[int, int]:
    """Convert ``source`` in ``format`` to TRL stepwise JSONL at ``out_path`` -> (rows written, rows skipped).

    Everything is read and checked before anything is written, and the write is atomic; if no row converts, it is a
    UserError and ``out_path`` is left as it was.
    """
    name = format_name(format)
    parser = _bind_options(name, ROW_PARSERS[name], options)
    examples, skipped = _parse_rows(parser, iter_rows(source, split, subset), f"{name}-{split}", skip_bad, True)
    if not examples:
        raise UserError(f"{source}: no row converted ({skipped} skipped); {out_path} left unchanged")
    written = write_jsonl(out_path, (example.to_row() for example in examples))
    return written, skipped


LOADERS: dict[str, Callable[..., tuple[list[Item], int]]] = {
    name: functools.partial(load, name) for name in ROW_PARSERS
}
"""Format name -> ``loader(source, split="train", *, subset=None, skip_bad=False, **options)``."""


def problem_to_stepwise(problem: Problem, where: str) -> StepwiseExample:
    """A reference solution as a stepwise example: every step labelled True, meta ``{id, answer}``."""
    if not problem.reference_steps:
        raise UserError(f"{where}: no reference solution steps to write")
    steps = list(problem.reference_steps)
    return StepwiseExample(problem.question, steps, [True] * len(steps), {"id": problem.id, "answer": problem.answer})


def _bind_options(format: str, parser: RowParser, options: dict[str, Any]) -> Callable[[Any, str], Item | None]:
    """Check ``options`` against the parser's keyword-only parameters (and their named choices); bind them."""
    accepted = [p.name for p in inspect.signature(parser).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for key, value in options.items():
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise UserError(f"format '{format}' has no option '{key}'; its options: {valid}")
        if key in OPTION_CHOICES and value not in OPTION_CHOICES[key]:
            raise UserError(f"option {key}={value!r} is not one of: {', '.join(OPTION_CHOICES[key])}")
    return functools.partial(parser, **options)


def _parse_rows(
    parser: Callable[[Any, str], Item | None], rows: Rows, id_prefix: str, skip_bad: bool, as_stepwise: bool
) -> tuple[list[Any], int]:
    """Parse every row; a bad row raises its UserError, or is counted in the skipped total when ``skip_bad``."""
    items, skipped = [], 0
    for index, (where, row) in enumerate(rows):
        try:
            item = _parse_one(parser, row, f"{id_prefix}-{index}", where, as_stepwise)
        except UserError:
            if not skip_bad:
                raise
            item = None
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return items, skipped


def _parse_one(
    parser: Callable[[Any, str], Item | None], row: Any, row_id: str, where: str, as_stepwise: bool
) -> Item | None:
    """One row -> item (or None: nothing to convert); every problem with the row is a UserError naming ``where``."""
    if isinstance(row, BadRow):
        raise UserError(f"{where}: {row}")
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    try:
        item = parser(row, row_id)
    except BadRow as err:
        raise UserError(f"{where}: {err}") from None
    except _ROW_ERRORS as err:
        raise UserError(f"{where}: malformed row ({type(err).__name__}: {err})") from None
    if item is None:
        return None
    if as_stepwise and isinstance(item, Problem):
        item = problem_to_stepwise(item, where)
    if isinstance(item, StepwiseExample):
        item.validate(where)
    if as_stepwise:
        _check_writable(item.to_row(), where)
    return item


def _check_writable(row: dict[str, Any], where: str) -> None:
    """UserError naming ``where`` and the key whose value JSON cannot hold (bytes or a date from a parquet column)."""
    for key, value in row.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: key '{key}' cannot be written as JSON ({err})") from None


# ---------------------------------------------------------------- reading sources


def iter_rows(source: str | Path, split: str = "train", subset: str | None = None) -> Rows:
    """Yield ``(where, row)`` for every row of ``source`` (local file or hub name); see the module docstring."""
    path = Path(source).expanduser()
    looks_local = path.suffix.lower() in LOCAL_BUILDERS or str(source).startswith(("/", "./", "../", "~"))
    if not (looks_local or path.exists()):
        return _hub_rows(str(source), split, subset)
    if not path.exists():
        raise UserError(f"{source}: no such file")
    if not path.is_file():
        raise UserError(f"{source}: not a file; give a .json, .jsonl or .parquet file")
    if path.suffix.lower() not in LOCAL_BUILDERS:
        raise UserError(f"{source}: unsupported file type '{path.suffix}'; use .json, .jsonl or .parquet")
    return _local_rows(path, str(source), split)


def _hub_rows(name: str, split: str, subset: str | None) -> Rows:
    require_hub(name, "dataset source")
    subset = subset or HUB_SUBSETS.get(name)
    try:
        dataset = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # noqa: BLE001 -- datasets raises many types (offline, not found, bad split); one line out
        raise UserError(f"{name}: cannot load split '{split}' from the hub ({_first_line(err)})") from None
    return _dataset_rows(dataset, f"{name}[{split}]")


def _local_rows(path: Path, shown: str, split: str) -> Rows:
    """Rows of a local JSON/JSONL file (Python's json) or parquet file (datasets), as the module docstring says."""
    if LOCAL_BUILDERS[path.suffix.lower()] == "json":
        return _json_rows(path, shown)
    with _quiet_datasets():
        try:
            dataset = datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        except Exception as err:  # noqa: BLE001 -- a broken file surfaces as one of many datasets/arrow errors
            raise UserError(f"{shown}: cannot read as parquet ({_first_line(err)})") from None
    return _dataset_rows(dataset, shown)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' progress bars and log lines while it reads a local file (restored after): one line out."""
    bars_were_on, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()


def _dataset_rows(dataset: datasets.Dataset, shown: str) -> Rows:
    """``(shown:number, row)`` for each row, numbered from 1; a row holding text that is not UTF-8 becomes a BadRow.

    datasets decodes each row's text as it yields it, and an undecodable row ends the iteration: go on after it.
    """
    start = 0
    while start < len(dataset):
        position = start
        try:
            for row in dataset.select(range(start, len(dataset))) if start else dataset:
                yield f"{shown}:{position + 1}", row
                position += 1
            return
        except UnicodeDecodeError as err:
            byte = err.object[err.start]
            yield f"{shown}:{position + 1}", BadRow(f"not UTF-8 text (byte {byte:#04x} at {err.start} of a string)")
            start = position + 1


def _json_rows(path: Path, shown: str) -> Rows:
    """A JSON array file's records numbered from 1, else JSON lines numbered by line (blank lines skipped)."""
    with path.open("rb") as handle:
        is_array = handle.read(4096).removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"[")
    return _json_array_rows(path, shown) if is_array else _json_line_rows(path, shown)


def _json_array_rows(path: Path, shown: str) -> Rows:
    """Records of a JSON array file, numbered from 1; a record holding a byte that is not UTF-8 becomes a BadRow."""
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")  # a bad byte stays inside its record
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{shown}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise UserError(f"{shown}: not valid JSON (nested too deeply)") from None
    return ((f"{shown}:{number}", _utf8_checked(row)) for number, row in enumerate(records, start=1))


def _json_line_rows(path: Path, shown: str) -> Rows:
    """One row per non-blank line, read one line at a time (bounded memory); a broken line becomes a BadRow."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{shown}:{number}", _json_line(line)


def _json_line(line: bytes) -> Any:
    """The value on one JSONL line, or a BadRow saying why it is not one."""
    try:
        text = line.decode("utf-8-sig")  # -sig: a byte-order mark some editors put at the start is not an error
    except UnicodeDecodeError as err:
        return BadRow(f"not UTF-8 text (byte {err.start} of the line)")
    try:
        return _utf8_checked(json.loads(text))
    except json.JSONDecodeError as err:
        return BadRow(f"not valid JSON ({err.msg})")
    except RecursionError:
        return BadRow("not valid JSON (nested too deeply)")


def _utf8_checked(value: Any) -> Any:
    """``value``, or a BadRow if text in it cannot be written as UTF-8 (an undecodable byte or a lone ``\\ud800``)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return BadRow("not UTF-8 text (a byte that is not UTF-8, or a lone surrogate escape such as \\ud800)")
    return value


def _first_line(err: BaseException) -> str:
    message = str(err).strip().split("\n")[0]
    return f"{type(err).__name__}: {message[:200]}" if message else type(err).__name__
