"""Tests for data/loaders.py and data/formats.py: upstream formats -> schema -> TRL JSONL; bad rows; atomic writes."""

import json
import re
from pathlib import Path

import datasets
import pytest

from prmloop.data import loaders
from prmloop.data.formats import last_boxed
from prmloop.data.loaders import convert, format_names, load
from prmloop.data.schema import Problem, StepwiseExample
from prmloop.utils.errors import UserError
from tests.fixtures_formats import (
    GSM8K_ROWS,
    MATH500_ROWS,
    MATH_ROWS,
    MATH_SHEPHERD_ROWS,
    PRM800K_BAD_PROBLEM_ROW,
    PRM800K_PHASE1_ROW,
    PRM800K_PHASE2_ROW,
    PROCESSBENCH_ROWS,
    TRL_STEPWISE_ROWS,
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- each format: schema and TRL JSONL


def test_gsm8k_to_problem_and_trl(tmp_path):
    source = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    problems, skipped = load("gsm8k", source, split="test")
    assert skipped == 0
    assert problems[0] == Problem(
        "gsm8k-test-0",
        GSM8K_ROWS[0]["question"],
        "72",
        ("Natalia sold 48/2 = 24 clips in May.", "Natalia sold 48+24 = 72 clips altogether in April and May."),
    )
    assert problems[1].answer == "2400"  # '#### 2,400' without the thousands separator
    assert problems[1].reference_steps == ("It sells 1,200 * 2 = 2,400 pens.",)

    written, skipped = convert("gsm8k", source, tmp_path / "out.jsonl")
    assert (written, skipped) == (2, 0)
    assert read_jsonl(tmp_path / "out.jsonl")[1] == {
        "prompt": GSM8K_ROWS[1]["question"],
        "completions": ["It sells 1,200 * 2 = 2,400 pens."],
        "labels": [True],
        "id": "gsm8k-train-1",
        "answer": "2400",
    }


def test_math_answer_from_last_boxed_with_nested_braces(tmp_path):
    (problem,), _ = load("math", write_jsonl(tmp_path / "math.jsonl", MATH_ROWS))
    assert problem.answer == "\\frac{1}{2}"
    assert problem.id == "math-train-0"
    assert problem.reference_steps == (
        "Divide the numerator and the denominator by $2$.",
        "So $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
    )


def test_math500_answer_and_unique_id(tmp_path):
    source = write_jsonl(tmp_path / "math500.jsonl", MATH500_ROWS)
    (problem,), _ = load("math", source, split="test")
    assert problem.id == "test/precalculus/807.json"
    assert problem.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    convert("math", source, tmp_path / "out.jsonl", split="test")
    (row,) = read_jsonl(tmp_path / "out.jsonl")
    assert row["labels"] == [True, True]
    assert row["completions"][0] == "We have that $r = \\sqrt{0^2 + 3^2} = 3.$"


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b^{2}}}.") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed {") is None


def test_prm800k_phase2_error_step_ends_the_path(tmp_path):
    source = write_jsonl(tmp_path / "phase2_train.jsonl", [PRM800K_PHASE2_ROW])
    (example,), skipped = load("prm800k", source)
    assert skipped == 0
    assert example.prompt == "What is $2 + 3 \\cdot 4$?"
    assert example.completions == ["I multiply first.", "$3 \\cdot 4 = 12$.", "$2 + 12 = 15$."]
    assert example.labels == [True, True, False]  # ratings 0 (neutral -> positive), +1, -1 (the unchosen error)
    assert example.meta == {"id": "prm800k-train-0", "answer": "14", "finish_reason": "found_error"}

    (negative,), _ = load("prm800k", source, neutral_as="negative")
    assert negative.labels == [False, True, False]


def test_prm800k_phase1_follows_chosen_and_human_completions(tmp_path):
    rows = [PRM800K_PHASE1_ROW, PRM800K_BAD_PROBLEM_ROW]
    source = write_jsonl(tmp_path / "phase1_train.jsonl", rows)
    (example,), skipped = load("prm800k", source)
    assert skipped == 1  # the bad_problem row holds nothing to convert
    assert example.completions == ["The divisors of $6$ are $1, 2, 3, 6$.", "That is $4$ divisors.", "# Answer\n\n4"]
    assert example.labels == [True, True, True]

    assert convert("prm800k", source, tmp_path / "out.jsonl") == (1, 1)
    assert read_jsonl(tmp_path / "out.jsonl")[0]["labels"] == [True, True, True]


def test_prm800k_stops_before_an_unrated_step(tmp_path):
    row = json.loads(json.dumps(PRM800K_PHASE2_ROW))
    row["label"]["steps"][1]["completions"][0]["rating"] = None
    (example,), _ = load("prm800k", write_jsonl(tmp_path / "p.jsonl", [row]))
    assert example.completions == ["I multiply first."]
    assert example.labels == [True]


def test_math_shepherd_steps_and_labels(tmp_path):
    source = write_jsonl(tmp_path / "math_shepherd.jsonl", MATH_SHEPHERD_ROWS)
    (first, second), skipped = load("math-shepherd", source)  # '-' reads as '_'
    assert skipped == 0
    assert first.prompt == "Janet has 16 eggs. She eats 3 and sells the rest at $2 each. How much does she make?"
    assert first.completions == [
        "Step 1: She sells 16 - 3 = <<16-3=13>>13 eggs.",
        "Step 2: She makes 13 * 2 = <<13*2=26>>26 dollars. The answer is: 26",
    ]
    assert first.labels == [True, True]
    assert first.meta == {"id": "math_shepherd-train-0", "task": "GSM8K"}
    assert second.prompt == "What is $3^2 + 4$?"
    assert second.completions == ["Step 1: $3^2 = 6$.", "Step 2: $6 + 4 = 10$.", "Step 3: The answer is: 10"]
    assert second.labels == [False, False, False]

    convert("math_shepherd", source, tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl")[1] == {
        "prompt": "What is $3^2 + 4$?",
        "completions": ["Step 1: $3^2 = 6$.", "Step 2: $6 + 4 = 10$.", "Step 3: The answer is: 10"],
        "labels": [False, False, False],
        "id": "math_shepherd-train-1",
        "task": "MATH",
    }


def test_math_shepherd_mixed_labels_read_at_shifted_offsets():
    from prmloop.data.formats import parse_math_shepherd

    row = {
        "input": "Q? Step 1: a ки\nStep 2: b ки\nStep 3: c ки",
        "label": "Q? Step 1: a +\nStep 2: b -\nStep 3: c -",
    }
    assert parse_math_shepherd(row, "x").labels == [True, False, False]


def test_processbench_first_error_labels_from_parquet(tmp_path):
    source = tmp_path / "gsm8k.parquet"
    datasets.Dataset.from_list(PROCESSBENCH_ROWS).to_parquet(str(source))
    (wrong, right), skipped = load("processbench", source, split="gsm8k")
    assert skipped == 0
    assert wrong.labels == [True, False, False]  # label 1: step 1 is the first error; it and later steps are False
    assert wrong.meta == {"id": "gsm8k-0", "generator": "Qwen2-7B-Instruct", "label": 1, "final_answer_correct": False}
    assert right.labels == [True, True]  # label -1: no error
    assert right.completions == ["10 - 4 = 6.", "The answer is \\boxed{6}."]


def test_trl_stepwise_keeps_bools_and_soft_floats(tmp_path):
    source = write_jsonl(tmp_path / "trl.jsonl", TRL_STEPWISE_ROWS)
    examples, _ = load("trl_stepwise", source)
    assert examples[0].labels == [True, True]
    assert all(isinstance(label, bool) for label in examples[0].labels)
    assert examples[1].labels == [0.25, 0.0]
    assert all(type(label) is float for label in examples[1].labels)
    convert("trl_stepwise", source, tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl") == TRL_STEPWISE_ROWS
    assert StepwiseExample.from_row(read_jsonl(tmp_path / "out.jsonl")[1], "out.jsonl:2").labels == [0.25, 0.0]


def test_json_array_file(tmp_path):
    source = tmp_path / "trl.json"
    source.write_text(json.dumps(TRL_STEPWISE_ROWS), encoding="utf-8")
    examples, _ = load("trl_stepwise", source)
    assert [example.prompt for example in examples] == ["What is 2 + 2?", "What is 3 * 3?"]


# ---------------------------------------------------------------- bad rows


def test_bad_row_names_file_and_line(tmp_path):
    bad = {"question": "No final line?", "answer": "Just 3.\n3"}
    source = write_jsonl(tmp_path / "train.jsonl", [GSM8K_ROWS[0], bad, GSM8K_ROWS[1]])
    with pytest.raises(UserError, match=r"train\.jsonl:2: the answer's last line must be '#### "):
        load("gsm8k", source)
    problems, skipped = load("gsm8k", source, skip_bad=True)
    assert (len(problems), skipped) == (2, 1)
    assert [p.answer for p in problems] == ["72", "2400"]


def test_row_numbers_are_line_numbers_across_blank_lines(tmp_path):
    source = tmp_path / "train.jsonl"
    bad = {"prompt": "p", "completions": ["a", "b"], "labels": [True]}
    lines = [json.dumps(TRL_STEPWISE_ROWS[0]), "", json.dumps(TRL_STEPWISE_ROWS[1]), json.dumps(bad)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.jsonl:4: 1 labels for 2 steps"):
        load("trl_stepwise", source)


def test_invalid_json_line_is_named_and_skippable(tmp_path):
    source = tmp_path / "train.jsonl"
    lines = [json.dumps(row) for row in PROCESSBENCH_ROWS]
    source.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.jsonl:2: not valid JSON"):
        load("processbench", source)
    examples, skipped = load("processbench", source, skip_bad=True)
    assert ([e.meta["id"] for e in examples], skipped) == (["gsm8k-0", "gsm8k-1"], 1)


@pytest.mark.parametrize(
    ("format", "row", "message"),
    [
        ("processbench", {**PROCESSBENCH_ROWS[0], "label": 3}, "key 'label' must be -1 or a step index below 3"),
        ("processbench", {**PROCESSBENCH_ROWS[0], "steps": "one step"}, "key 'steps' must be a non-empty list"),
        ("math_shepherd", {**MATH_SHEPHERD_ROWS[1], "label": MATH_SHEPHERD_ROWS[1]["input"]}, "step 1: 'label' has"),
        ("math_shepherd", {"input": "no tags", "label": "no tags", "task": "MATH"}, "'input' holds no step tag"),
        ("math", {"problem": "p", "solution": "no box", "level": "Level 1", "type": "Algebra"}, "no 'answer' and no"),
        ("prm800k", {**PRM800K_PHASE2_ROW, "label": {"steps": "x"}}, "label.steps must be a list, got str 'x'"),
        ("trl_stepwise", {"prompt": "p", "completions": ["a"], "labels": [2.0]}, "label 0 is 2.0"),
    ],
)
def test_bad_rows_per_format(tmp_path, format, row, message):
    source = write_jsonl(tmp_path / "data.jsonl", [row])
    with pytest.raises(UserError, match=re.escape("data.jsonl:1: " + message)):
        load(format, source)
    assert load(format, source, skip_bad=True) == ([], 1)


def test_prm800k_bad_chosen_index(tmp_path):
    row = json.loads(json.dumps(PRM800K_PHASE2_ROW))
    row["label"]["steps"][0]["chosen_completion"] = 4
    with pytest.raises(UserError, match=r"p\.jsonl:1: label\.steps\[0\]\.chosen_completion 4 is not an index"):
        load("prm800k", write_jsonl(tmp_path / "p.jsonl", [row]))


def test_problem_without_steps_is_bad_for_convert(tmp_path):
    source = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROWS[0], {"question": "Q?", "answer": "#### 5"}])
    (_, no_steps), _ = load("gsm8k", source)
    assert no_steps.reference_steps == ()
    with pytest.raises(UserError, match=r"g\.jsonl:2: no reference solution steps to write"):
        convert("gsm8k", source, tmp_path / "out.jsonl")
    assert convert("gsm8k", source, tmp_path / "out.jsonl", skip_bad=True) == (1, 1)


# ---------------------------------------------------------------- atomic output, names, sources


def test_failed_convert_keeps_previous_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous good output\n", encoding="utf-8")
    bad = {**PROCESSBENCH_ROWS[0], "label": 9}
    source = write_jsonl(tmp_path / "train.jsonl", [PROCESSBENCH_ROWS[0], bad])
    with pytest.raises(UserError, match=r"train\.jsonl:2:"):
        convert("processbench", source, out)
    assert out.read_text(encoding="utf-8") == "previous good output\n"
    with pytest.raises(UserError, match="no row converted"):
        convert("processbench", write_jsonl(tmp_path / "all_bad.jsonl", [bad]), out, skip_bad=True)
    assert out.read_text(encoding="utf-8") == "previous good output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_bad.jsonl", "out.jsonl", "train.jsonl"]


def test_unknown_format_lists_valid_names(tmp_path):
    with pytest.raises(UserError) as err:
        load("shepherd", write_jsonl(tmp_path / "x.jsonl", TRL_STEPWISE_ROWS))
    assert str(err.value) == (
        "unknown data format 'shepherd'; valid formats: gsm8k, math, math_shepherd, prm800k, processbench, trl_stepwise"
    )
    assert format_names() == sorted(loaders.LOADERS)


def test_unknown_or_invalid_option(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [PRM800K_PHASE2_ROW])
    with pytest.raises(UserError, match="format 'gsm8k' has no option 'neutral_as'; its options: none"):
        load("gsm8k", source, neutral_as="positive")
    with pytest.raises(UserError, match="option neutral_as='zero' is not one of: positive, negative"):
        load("prm800k", source, neutral_as="zero")


def test_missing_local_file_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load("gsm8k", tmp_path / "nope.jsonl")
    assert str(err.value) == f"{tmp_path / 'nope.jsonl'}: no such file"
    with pytest.raises(UserError, match="unsupported file type '.csv'"):
        (tmp_path / "data.csv").write_text("a,b\n")
        load("gsm8k", tmp_path / "data.csv")


@pytest.fixture
def hub_online(monkeypatch):
    monkeypatch.setattr("prmloop.utils.hub.hub_reachable", lambda: True)


def test_hub_name_offline_fails_at_once_in_one_line(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("prmloop.utils.hub.hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    with pytest.raises(UserError, match=r"^dataset source: 'openai/gsm8k' is not a local path and the hub cannot be "
                                        r"reached \(offline\)"):
        load("gsm8k", "openai/gsm8k", split="test")


def test_hub_name_goes_to_load_dataset(monkeypatch, hub_online):
    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return datasets.Dataset.from_list(GSM8K_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems, _ = loaders.LOADERS["gsm8k"]("openai/gsm8k", split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [p.id for p in problems] == ["gsm8k-test-0", "gsm8k-test-1"]

    bad = {"question": "Q", "answer": "no final line"}
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_list([bad]))
    with pytest.raises(UserError, match=r"^openai/gsm8k\[test\]:1: the answer's last line"):
        load("gsm8k", "openai/gsm8k", split="test")


def test_hub_failure_is_one_line(monkeypatch, hub_online):
    def offline(name, subset=None, split=None):
        raise ConnectionError("Couldn't reach 'Qwen/ProcessBench' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        load("processbench", "Qwen/ProcessBench", split="gsm8k")
    assert str(err.value) == (
        "Qwen/ProcessBench: cannot load split 'gsm8k' from the hub "
        "(ConnectionError: Couldn't reach 'Qwen/ProcessBench' on the Hub)"
    )


@pytest.mark.parametrize("fmt", ["gsm8k"])  # every format and file type: tests/test_convert_hostile.py
def test_a_non_utf8_byte_in_a_row_is_one_line_naming_the_row(tmp_path, fmt):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"question": "fine", "answer": "#### 1"}\n{"question": "Q \xff x", "answer": "a\\n#### 5"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: not UTF-8 text"):
        load(fmt, path)
