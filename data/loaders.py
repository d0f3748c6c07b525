"""Load a named dataset format from a hub name or a local JSON/JSONL/parquet file into the one schema; convert to TRL.

Sources: a path ending in ``.json``, ``.jsonl`` or ``.parquet`` (or any existing path) is a local file, read with
``datasets.load_dataset("json" | "parquet", data_files={split: path})``; anything else is a hub dataset name, read with
``datasets.load_dataset(name, subset, split=split)`` (``openai/gsm8k`` defaults to subset ``main``). A local JSON
file that ``datasets`` cannot parse (a broken line) is read again line by line, so the broken line is named.

Rows: each row is parsed by its format's parser (``data.formats.ROW_PARSERS``; rules for labels there). A bad row
raises ``UserError("train.jsonl:12: ...")`` naming the file and 1-based row (the line number in a JSONL file; the
record number otherwise). With ``skip_bad=True`` bad rows are skipped and counted instead. ``n_skipped`` also counts
well-formed rows that hold nothing to convert (PRM800K ``bad_problem`` rows, or rows with no rated step).

Converting writes TRL stepwise JSONL ``{prompt, completions, labels, **meta}`` atomically (temp file + rename): a
failure leaves any previous output file untouched. Problem-only formats (GSM8K, MATH) write their reference solution
steps, all labelled True (reference solutions are taken as correct), with meta ``{id, answer}``; a problem without
reference steps is a bad row for conversion.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from prmloop.data.errors import UserError
from prmloop.data.formats import OPTION_CHOICES, ROW_PARSERS, BadRow, RowParser
from prmloop.data.hub import require_hub
from prmloop.data.jsonl import write_jsonl
from prmloop.data.schema import Problem, StepwiseExample

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""Local file suffix -> the ``datasets`` builder that reads it."""
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
    return item


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
    return ((f"{name}[{split}]:{number}", row) for number, row in enumerate(dataset, start=1))


def _check_utf8(path: Path, shown: str) -> None:
    """UserError naming file:line at the first byte that is not UTF-8 (read line by line: bounded memory)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{shown}:{number}: not UTF-8 text (byte {err.start} of the line)") from None


def _local_rows(path: Path, shown: str, split: str) -> Rows:
    builder = LOCAL_BUILDERS[path.suffix.lower()]
    if builder == "json":
        _check_utf8(path, shown)
    try:
        dataset = datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    except Exception as err:  # noqa: BLE001 -- a broken file surfaces as one of many datasets/arrow/pandas errors
        if builder == "json":
            return _json_rows_by_line(path, shown)
        raise UserError(f"{shown}: cannot read as {builder} ({_first_line(err)})") from None
    numbers: Any = range(1, len(dataset) + 1)
    if path.suffix.lower() == ".jsonl":
        line_numbers = _non_blank_line_numbers(path)
        if len(line_numbers) == len(dataset):  # one record per non-blank line: name rows by their line number
            numbers = line_numbers
    return ((f"{shown}:{number}", row) for number, row in zip(numbers, dataset))


def _non_blank_line_numbers(path: Path) -> list[int]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return [number for number, line in enumerate(handle, start=1) if line.strip()]


def _json_rows_by_line(path: Path, shown: str) -> Rows:
    """Fallback reader: a JSON array file whole, else JSON lines one by one (a broken line becomes a BadRow)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{shown}:{err.lineno}: not valid JSON ({err.msg})") from None
        return ((f"{shown}:{number}", row) for number, row in enumerate(records, start=1))
    return ((f"{shown}:{number}", _loads_line(line)) for number, line in _numbered_lines(text))


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _loads_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        return BadRow(f"not valid JSON ({err.msg})")


def _first_line(err: BaseException) -> str:
    message = str(err).strip().split("\n")[0]
    return f"{type(err).__name__}: {message[:200]}" if message else type(err).__name__
