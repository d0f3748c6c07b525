"""Hostile rows through `prmloop data convert`: one line naming the file and the bad row, exit 2, old output untouched.

Table-driven: format x hostile row x source container (JSONL, JSON array, parquet). Every source holds four rows and
row 3 is the hostile one, so the error must name row 3 (the line of a JSONL file, the record of a JSON array or a
parquet file), not row 1. ``--skip-bad`` must then write the other three rows and report one skipped.

A parquet column has one type, so a row whose value has another type than the same key in the good rows (a string
label among numbers, a list where the others hold a string) cannot be written as parquet: those cases run for JSONL and
JSON only. Null, NaN, missing keys (null in parquet), empty lists and bytes that are not UTF-8 run for all three.
A lone surrogate escape (``"\\ud800"``, valid JSON that no UTF-8 file can hold) exists only in JSON text; a bytes
value in a free-form key (a binary parquet column) only in parquet.
"""

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prmloop.loop.cli import main
from tests.fixtures_formats import (
    GSM8K_ROWS,
    MATH_ROWS,
    MATH_SHEPHERD_ROWS,
    PRM800K_PHASE2_ROW,
    PROCESSBENCH_ROWS,
    TRL_STEPWISE_ROWS,
)

NOT_UTF8 = "<<not-utf8>>"
"""Marker the writers replace by the byte 0xff (never valid in UTF-8) inside the string that holds it."""
ALL = ("jsonl", "json", "parquet")
TEXT = ("jsonl", "json")  # the bad value's type differs from the column's: not writable as parquet
PARQUET = ("parquet",)  # a binary column (bytes in row 3, null in the others): JSON text has no bytes
PREVIOUS_OUTPUT = b'{"prompt": "previous good output"}\n'

GOOD_ROWS: dict[str, list[dict]] = {
    "gsm8k": GSM8K_ROWS,
    "math": MATH_ROWS,
    "prm800k": [PRM800K_PHASE2_ROW],
    "math_shepherd": MATH_SHEPHERD_ROWS,
    "processbench": PROCESSBENCH_ROWS,
    "trl_stepwise": TRL_STEPWISE_ROWS[1:],  # soft float labels, so a NaN label fits the parquet column
}
"""Rows each format converts; the good rows of a source cycle through them."""


def _parent(row: dict, path: tuple[str | int, ...]) -> dict | list:
    """The container holding the last key of ``path`` (keys and list indexes) in ``row``."""
    for key in path[:-1]:
        row = row[key]
    return row


def setting(*path: str | int, value) -> Callable[[dict], None]:
    """A row edit: set the value at ``path`` to ``value``."""

    def edit(row: dict) -> None:
        _parent(row, path)[path[-1]] = value

    return edit


def appending(*path: str | int, text: str) -> Callable[[dict], None]:
    """A row edit: append ``text`` to the string at ``path``."""

    def edit(row: dict) -> None:
        _parent(row, path)[path[-1]] += text

    return edit


def deleting(key: str) -> Callable[[dict], None]:
    """A row edit: remove ``key`` (in parquet: null in this row only)."""

    def edit(row: dict) -> None:
        del row[key]

    return edit


def shepherd_texts(input_text: str, label_text: str) -> Callable[[dict], None]:
    """A row edit: a Math-Shepherd row's ``input`` and ``label`` texts."""

    def edit(row: dict) -> None:
        row["input"], row["label"] = input_text, label_text

    return edit


NAN = float("nan")
CHOSEN = ("label", "steps", 1, "completions", 0)  # PRM800K: the completion chosen at step 2
RATING, TEXT_OF_CHOSEN = (*CHOSEN, "rating"), (*CHOSEN, "text")
TWO_STEPS = "Q? Step 1: a ки\nStep 2: b ки"  # Math-Shepherd input with two tagged steps
CASES = [  # (format, case, edit of row 3, containers, what the one line must say after "file:3: ")
    ("gsm8k", "non_utf8", appending("question", text=NOT_UTF8), ALL, "not UTF-8"),
    ("gsm8k", "missing_key", deleting("answer"), ALL, "key 'answer' must be a non-empty string"),
    ("gsm8k", "null", setting("question", value=None), ALL, "key 'question' must be a non-empty string"),
    ("gsm8k", "list_for_string", setting("answer", value=["#### 5"]), TEXT, "key 'answer' must be a non-empty string"),
    ("gsm8k", "no_steps", setting("answer", value="#### 5"), ALL, "no reference solution steps"),
    ("gsm8k", "no_final_line", setting("answer", value="It is 5."), ALL, "the answer's last line must be"),
    ("math", "non_utf8", appending("problem", text=NOT_UTF8), ALL, "not UTF-8"),
    ("math", "missing_key", deleting("solution"), ALL, "key 'solution' must be a non-empty string"),
    ("math", "null", setting("problem", value=None), ALL, "key 'problem' must be a non-empty string"),
    ("math", "list_for_string", setting("solution", value=["\\boxed{1}"]), TEXT, "key 'solution' must be"),
    ("math", "answer_is_a_list", setting("answer", value=["1"]), TEXT, "key 'answer' must be a string"),
    ("math", "no_answer", setting("solution", value="No box here."), ALL, "no 'answer' and no"),
    ("prm800k", "non_utf8", appending("question", "problem", text=NOT_UTF8), TEXT, "not UTF-8"),
    ("prm800k", "non_utf8_top_level", appending("labeler", text=NOT_UTF8), ALL, "not UTF-8"),
    ("prm800k", "missing_key", deleting("question"), ALL, "keys 'question' and 'label' must be objects"),
    ("prm800k", "null_steps", setting("label", "steps", value=None), ALL, "label.steps must be a list"),
    ("prm800k", "rating_string", setting(*RATING, value="1"), TEXT, "label.steps[1].completions[0]: rating must be"),
    ("prm800k", "rating_nan", setting(*RATING, value=NAN), ALL, "label.steps[1].completions[0]: rating must be"),
    ("prm800k", "rating_5", setting(*RATING, value=5), ALL, "label.steps[1].completions[0]: rating must be"),
    ("prm800k", "chosen_string", setting("label", "steps", 0, "chosen_completion", value="0"), TEXT, "'0' is not"),
    ("prm800k", "empty_step", setting(*TEXT_OF_CHOSEN, value=""), ALL, "key 'text' must be a non-empty string"),
    ("prm800k", "text_list", setting(*TEXT_OF_CHOSEN, value=["a"]), TEXT, "key 'text' must be a non-empty string"),
    ("math_shepherd", "non_utf8", appending("input", text=NOT_UTF8), ALL, "not UTF-8"),
    ("math_shepherd", "missing_key", deleting("label"), ALL, "key 'label' must be a non-empty string"),
    ("math_shepherd", "null", setting("input", value=None), ALL, "key 'input' must be a non-empty string"),
    ("math_shepherd", "list_for_string", setting("label", value=["+"]), TEXT, "key 'label' must be"),
    ("math_shepherd", "label_nan", setting("label", value=NAN), TEXT, "key 'label' must be a non-empty string"),
    ("math_shepherd", "bad_mark", shepherd_texts(TWO_STEPS, "Q? Step 1: a +\nStep 2: b ?"), ALL, "step 2: 'label' has"),
    ("math_shepherd", "short_label", shepherd_texts(TWO_STEPS, "Q? Step 1: a +"), ALL, "step 2: 'label' has ''"),
    ("math_shepherd", "empty_step", shepherd_texts("Q? Step 1: a ки ки", "Q? Step 1: a + +"), ALL, "an empty step"),
    ("processbench", "non_utf8", appending("problem", text=NOT_UTF8), ALL, "not UTF-8"),
    ("processbench", "missing_key", deleting("steps"), ALL, "key 'steps' must be a non-empty list of strings"),
    ("processbench", "null", setting("problem", value=None), ALL, "key 'problem' must be a non-empty string"),
    ("processbench", "steps_string", setting("steps", value="one step"), TEXT, "key 'steps' must be a non-empty list"),
    ("processbench", "null_step", setting("steps", 1, value=None), ALL, "key 'steps' must be a non-empty list"),
    ("processbench", "empty_steps", setting("steps", value=[]), ALL, "key 'steps' must be a non-empty list"),
    ("processbench", "blank_step", setting("steps", 1, value=" "), ALL, "'completions' holds an empty step"),
    ("processbench", "label_string", setting("label", value="1"), TEXT, "key 'label' must be -1 or a step index"),
    ("processbench", "label_nan", setting("label", value=NAN), ALL, "key 'label' must be -1 or a step index"),
    ("processbench", "label_past_steps", setting("label", value=7), ALL, "key 'label' must be -1 or a step index"),
    ("trl_stepwise", "non_utf8", appending("prompt", text=NOT_UTF8), ALL, "not UTF-8"),
    ("trl_stepwise", "lone_surrogate", appending("prompt", text="\ud800"), TEXT, "not UTF-8"),
    ("trl_stepwise", "missing_key", deleting("labels"), ALL, "missing key 'labels'"),
    ("trl_stepwise", "null", setting("prompt", value=None), ALL, "missing key 'prompt'"),
    ("trl_stepwise", "prompt_list", setting("prompt", value=["p"]), TEXT, "'prompt' must be a string"),
    ("trl_stepwise", "label_string", setting("labels", 0, value="1"), TEXT, "label 0 is '1'"),
    ("trl_stepwise", "label_nan", setting("labels", 1, value=NAN), ALL, "label 1 is nan"),
    ("trl_stepwise", "label_2", setting("labels", 0, value=2.0), ALL, "label 0 is 2.0"),
    ("trl_stepwise", "labels_short", setting("labels", value=[0.5]), ALL, "1 labels for 2 steps"),
    ("trl_stepwise", "empty_steps", setting("completions", value=[]), ALL, "'completions' must be a non-empty list"),
    ("trl_stepwise", "empty_step", setting("completions", 0, value=""), ALL, "'completions' holds an empty step"),
    ("trl_stepwise", "bytes_meta", setting("extra", value=b"\xff"), PARQUET, "key 'extra' cannot be written as JSON"),
]


def source_rows(format: str, edit: Callable[[dict], None]) -> list[dict]:
    """Four rows in ``format``: good ones, with row 3 (1-based) passed through ``edit``."""
    good = GOOD_ROWS[format]
    rows = [copy.deepcopy(good[index % len(good)]) for index in range(4)]
    edit(rows[2])
    return rows


def write_source(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSONL, a JSON array (one record a line) or parquet, by suffix; NOT_UTF8 becomes byte 0xff."""
    if path.suffix == ".parquet":
        keys = dict.fromkeys(key for row in rows for key in row)  # from_pylist would keep only the first row's keys
        table = pa.Table.from_pydict({key: [row.get(key) for row in rows] for key in keys})
        pq.write_table(_with_bad_bytes(table), path)
        return
    lines = [json.dumps(row) for row in rows]  # NaN -> the JSON literal NaN, "\ud800" -> its escape
    text = "\n".join(lines) + "\n" if path.suffix == ".jsonl" else "[\n" + ",\n".join(lines) + "\n]\n"
    path.write_bytes(text.encode("utf-8").replace(NOT_UTF8.encode(), b"\xff"))


def _with_bad_bytes(table: pa.Table) -> pa.Table:
    """``table`` with NOT_UTF8 replaced by 0xff in its top-level string columns (the string type kept, unchecked)."""
    for index, field in enumerate(table.schema):
        if field.type == pa.string():
            raw = pc.replace_substring(table.column(index).combine_chunks().cast(pa.binary()), NOT_UTF8, b"\xff")
            table = table.set_column(index, field, raw.view(pa.string()))
    return table


def convert_cli(capsys, source: Path, format: str, out: Path, *flags: str) -> tuple[int, str, str]:
    code = main(["data", "convert", "--format", format, "--source", str(source), "--out", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("format", "edit", "container", "message"),
    [
        pytest.param(format, edit, container, message, id=f"{format}-{case}-{container}")
        for format, case, edit, containers, message in CASES
        for container in containers
    ],
)
def test_hostile_row_is_one_line_naming_it_and_skippable(tmp_path, capsys, format, edit, container, message):
    source, out = tmp_path / f"source.{container}", tmp_path / "out.jsonl"
    write_source(source, source_rows(format, edit))
    out.write_bytes(PREVIOUS_OUTPUT)

    code, printed, errors = convert_cli(capsys, source, format, out)
    assert code == 2, errors
    assert "Traceback" not in errors and errors.endswith("\n") and errors.count("\n") == 1, errors
    assert errors.startswith(f"prmloop: error: {source}:3: "), errors
    assert message in errors, errors
    assert out.read_bytes() == PREVIOUS_OUTPUT
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([source.name, out.name])  # no temp file left

    code, printed, errors = convert_cli(capsys, source, format, out, "--skip-bad")
    assert (code, errors) == (0, "")
    assert printed == f"wrote 3 rows to {out}; skipped 1 bad rows\n"
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == 3
    assert all(not isinstance(label, float) or math.isfinite(label) for row in written for label in row["labels"])
