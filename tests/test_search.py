"""Tests for loop/search.py and its selection math in prm/metrics.py: hand-computed picks, the subset averaging on a toy
table, user errors, and one end-to-end `prmloop search` on a tiny random policy and PRM."""

import json
import random

import pytest

from prmloop.loop.beam_search import Beam, beam_search, cut_at_step_end, dvts, extend, keep_best
from prmloop.loop.cli import QUICK_CONFIG, main
from prmloop.loop.search import Samples, accuracy_vs_n, draw_subsets, markdown_table, sample_sizes
from prmloop.prm.metrics import best_of_n_accuracy, majority_vote_accuracy, weighted_best_of_n_accuracy, weighted_vote

# Three samples of one problem; "4" is right. Min over steps: 0.4, 0.5, 0.8; product: 0.36, 0.30, 0.64.
STEPS = [[[0.9, 0.4], [0.5, 0.6], [0.8, 0.8]]]
ANSWERS = [["4", "4", "5"]]
CORRECT = [[True, True, False]]


def test_best_of_n_and_weighted_best_of_n_pick_different_answers():
    # best_of_n: the highest single score is sample 2 (min 0.8; product 0.64) -> "5", wrong.
    assert best_of_n_accuracy(STEPS, CORRECT, "min") == 0.0
    assert best_of_n_accuracy(STEPS, CORRECT, "product") == 0.0
    # weighted: "4" sums 0.4 + 0.5 = 0.9 > "5" 0.8 (min); 0.36 + 0.30 = 0.66 > 0.64 (product) -> "4", right.
    assert weighted_best_of_n_accuracy(STEPS, ANSWERS, CORRECT, "min") == 1.0
    assert weighted_best_of_n_accuracy(STEPS, ANSWERS, CORRECT, "product") == 1.0
    assert majority_vote_accuracy(ANSWERS, CORRECT) == 1.0  # "4" has 2 of 3 votes


def test_weighted_vote_ties_none_and_errors():
    assert weighted_vote(["4", "4", "5"], [0.4, 0.5, 0.8]) == "4"  # 0.9 vs 0.8
    assert weighted_vote(["4", "4", "5"], [0.4, 0.3, 0.8]) == "5"  # 0.7 vs 0.8
    assert weighted_vote(["a", "b"], [0.5, 0.5]) == "a"  # a tie goes to the answer seen first
    assert weighted_vote([None, "3"], [5.0, 0.1]) == "3"  # no answer never wins, however high its score
    assert weighted_vote([None, None], [1.0, 1.0]) is None
    assert weighted_best_of_n_accuracy([[[0.9], [0.9]]], [[None, None]], [[False, False]], "min") == 0.0
    with pytest.raises(ValueError, match="2 answers for 1 scores"):
        weighted_vote(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="problem 0: sample 1 has no step scores"):
        weighted_best_of_n_accuracy([[[0.5], []]], [["a", "b"]], [[True, False]], "min")


def test_sample_sizes_and_subsets():
    assert sample_sizes(1) == [1] and sample_sizes(16) == [1, 2, 4, 8, 16] and sample_sizes(6) == [1, 2, 4, 6]
    assert draw_subsets(4, 4, 8, random.Random(0)) == [[0, 1, 2, 3]]  # n = N: the one full set
    drawn = draw_subsets(5, 3, 20, random.Random(0))
    assert len(drawn) == 20 and all(len(set(s)) == 3 and s == sorted(s) and max(s) < 5 for s in drawn)
    assert drawn == draw_subsets(5, 3, 20, random.Random(0))  # seeded: reproducible


# Toy table, N = 4. Problem 0: min scores 0.4, 0.5, 0.8, 0.1 for answers 4, 4, 5, 6 ("4" right), tokens 10..40.
# Problem 1: four right samples "7", 10 tokens each.
TOY = Samples(step_scores=[[[0.4], [0.5], [0.8], [0.1]], [[0.5]] * 4], answers=[["4", "4", "5", "6"], ["7"] * 4],
              correct=[[True, True, False, False], [True] * 4], tokens=[[10, 20, 30, 40], [10] * 4])


def test_subset_averaging_on_a_toy_table():
    rows = accuracy_vs_n(TOY, subsets=8, seed=0, aggregation="min")
    assert [row["n"] for row in rows] == [1, 2, 4] and [row["subsets"] for row in rows] == [8, 8, 1]
    full = rows[-1]
    # n = 4, problem 0: best picks 0.8 ("5", wrong); weighted "4" = 0.4 + 0.5 = 0.9 > 0.8 (right); maj "4" 2 votes.
    # Problem 1 is right for every strategy. So best_of_n = (0 + 1) / 2, the others (1 + 1) / 2.
    assert (full["best_of_n"], full["weighted_best_of_n"], full["maj_at_n"], full["pass_at_n"]) == (0.5, 1.0, 1.0, 1.0)
    assert full["best_of_n_ci"] == pytest.approx(6.3531)  # t(0.975, 1 dof) 12.7062 * sample std 0.7071 / sqrt(2)
    assert full["tokens_per_problem"] == 70.0  # (10 + 20 + 30 + 40 + 4 * 10) / 2 problems
    single = rows[0]  # n = 1: every strategy keeps the one sample, so all four agree
    assert len({single[name] for name in ("best_of_n", "weighted_best_of_n", "maj_at_n", "pass_at_n")}) == 1
    assert 10 < single["tokens_per_problem"] < 25  # problem 1: 10; problem 0: a mean of draws from 10..40
    assert rows == accuracy_vs_n(TOY, subsets=8, seed=0, aggregation="min")  # seeded: the table is reproducible
    table = markdown_table(rows, 2, "min")
    assert "| 4 | 70.0 | 0.500 ± 6.353 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in table
    assert "95% CI over problems" in table


def test_keep_best_picks_the_w_highest_best_first_ties_to_the_earlier():
    # Scores 0.2, 0.9, 0.5, 0.9, 0.1: the two 0.9s (index 1 before 3, a tie), then 0.5 (index 2).
    assert keep_best([0.2, 0.9, 0.5, 0.9, 0.1], 3) == [1, 3, 2]
    assert keep_best([0.2, 0.9], 5) == [1, 0]  # fewer candidates than W: all of them, best first
    assert keep_best([0.3], 0) == []


def test_cutting_at_the_first_step_end_keeps_the_whole_generation_token_count():
    # 20 tokens generated (of a 24-token budget, so EOS came), two steps: the step kept is the first, tokens stay 20.
    cut = cut_at_step_end("\n2 * 5 = 10\n10 + 14 = 24", "\n", tokens=20, budget=24)
    assert (cut.step, cut.tokens, cut.ended) == ("2 * 5 = 10", 20, False)  # more followed the step: not ended
    cut = cut_at_step_end("Answer: 40\n", "\n", tokens=6, budget=24)  # EOS after the step: the solution ended
    assert (cut.step, cut.tokens, cut.ended) == ("Answer: 40", 6, True)
    cut = cut_at_step_end("24 + 16 = 4", "\n", tokens=24, budget=24)  # cut off at the budget: no EOS
    assert (cut.step, cut.tokens, cut.ended) == ("24 + 16 = 4", 24, False)
    chars = lambda steps: sum(len(step) + 1 for step in steps)  # a prefix's length: one token a char
    beam = extend(Beam(["2 * 5 = 10"], length=11), cut, lambda step: step.startswith("Answer"), 4, 100, chars)
    assert beam.steps == ["2 * 5 = 10", "24 + 16 = 4"] and beam.length == 23 and not beam.complete  # 11 + 12
    assert extend(beam, cut, lambda step: False, 3, 100, chars).complete  # the third step reaches max_steps 3
    assert extend(beam, cut, lambda step: False, None, 35, chars).complete  # 23 + 12 >= 35 tokens


def test_beam_search_on_a_scripted_sampler_and_scorer():
    # One problem, W = 2, E = 2. Step 1 expansions of the prompt: "a" (score 0.9), "b" (0.1), neither ended (more text
    # followed) -> both kept.
    # Step 2: each prefix gets "Answer: 1" + EOS (6 tokens < budget 8); the scorer gives a prefix's score by its
    # first step, so both kept are "a ..." and "a" wins. Tokens: step 1 2 * 5, step 2 4 * 6 -> 34.
    def sample(prompts, n):
        first = all(p.endswith("Q") for p in prompts)
        texts = [["a\nmore", "b\nc"] if first else ["Answer: 1"] * n for _ in prompts]
        return texts, [[5] * n if first else [6] * n for _ in prompts]

    def score(prompts, groups):
        return [[[{"a": 0.9, "b": 0.1}[steps[0]]] * len(steps) for steps in group] for group in groups]

    results = beam_search(["Q"], lambda q, steps: q + "".join(s + "\n" for s in steps), sample, score, "\n", 8, 2, 2,
                          "min", lambda step: step.startswith("Answer"), None, 100, lambda steps: len(steps))
    assert results[0].best.steps == ["a", "Answer: 1"] and results[0].best.complete and results[0].tokens == 34


# DVTS vs beam, one problem, W = 2, E = 2, min aggregation; a step's score is fixed by its text (SCORES).
# The scripted sampler mimics a seeded one: at step 1 the prompt "Q" in row i of a call gives row i's samples (row 0:
# "a", "b"; row 1: "b", "c"); later its output follows the prefix: after "a" -> "a1", "a2"; after "b" -> "b1", "b2";
# after a second step the answer ("Answer: 1" after a*, "Answer: 2" after b*) and EOS. 5 tokens a step, 6 an answer.
SCORES = {"a": 0.9, "b": 0.7, "c": 0.1, "a1": 0.9, "a2": 0.9, "b1": 0.7, "b2": 0.7, "Answer: 1": 0.2, "Answer: 2": 0.6}


def scripted_sample(prompts, n):
    texts = []
    for row, prompt in enumerate(prompts):
        last = prompt.split("|")[-1]
        if last == "Q":
            texts.append(["a\nmore", "b\nmore"] if row % 2 == 0 else ["b\nmore", "c\nmore"])
        elif last in ("a", "b"):
            texts.append([f"{last}1\nmore", f"{last}2\nmore"])
        else:
            texts.append([f"Answer: {1 if last.startswith('a') else 2}"] * n)
    return texts, [[6 if text[0][0] == "A" else 5] * n for text in texts]


def scripted_score(prompts, groups):
    return [[[SCORES[step] for step in steps] for steps in group] for group in groups]


def test_dvts_keeps_one_prefix_per_subtree_and_finds_what_beam_pruned():
    args = (lambda q, steps: "|".join([q, *steps]), scripted_sample, scripted_score, "\n", 8, 2, 2, "min",
            lambda step: step.startswith("Answer"), None, 100, lambda steps: len(steps))
    # Beam (W = 2): step 1 from "Q" (row 0): a 0.9, b 0.7, both kept. Step 2: a-a1, a-a2 (min 0.9) beat b-b1, b-b2
    # (0.7): "b" is pruned. Step 3: both end in "Answer: 1", min 0.2. Tokens: 2 * 5 + 4 * 5 + 4 * 6 = 54.
    beam = beam_search(["Q"], *args)[0]
    assert beam.best.steps == ["a", "a1", "Answer: 1"] and beam.best.score == 0.2 and beam.tokens == 54
    # DVTS (2 subtrees of width 1): subtree 0 (row 0) keeps a over b, then a1 (tie with a2: the earlier), then
    # "Answer: 1" (0.2). Subtree 1 (row 1) keeps b over c, then b1, then "Answer: 2" (min 0.7, 0.7, 0.6 = 0.6): never
    # competing with subtree 0, its "b" line survives. Best final: 0.6 > 0.2. Tokens: 2 subtrees * (5+5 + 5+5 + 6+6).
    tree = dvts(["Q"], *args)[0]
    assert tree.best.steps == ["b", "b1", "Answer: 2"] and tree.best.score == 0.6 and tree.best.complete
    assert tree.tokens == 64
    # Two problems in one batch: rows p * W + w, so each problem's subtrees see the same rows as above.
    assert [r.best.steps for r in dvts(["Q", "Q"], *args)] == [["b", "b1", "Answer: 2"]] * 2


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny random policy (`prmloop policy init`, quick sizes) and a PRM built on it with a fresh head."""
    from prmloop.prm.model import StepRewardModel

    root = tmp_path_factory.mktemp("search")
    assert main(["policy", "init", "--out", str(root / "policy"), "--config", str(QUICK_CONFIG)]) == 0
    StepRewardModel.from_policy(str(root / "policy")).save_pretrained(root / "prm")
    return root


def test_search_cli_end_to_end(tiny_models, tmp_path, capsys):
    out = tmp_path / "search"
    code = main(["search", "--policy", str(tiny_models / "policy"), "--prm", str(tiny_models / "prm"), "--n", "4",
                 "--problems", "4", "--out", str(out), "--config", str(QUICK_CONFIG), "--set", "tracking.mode=disabled"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("search.md", "search.jsonl", "accuracy_vs_n.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "search.md").read_text() in printed
    rows = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [row["n"] for row in rows] == [1, 2, 4]
    passes = [row["pass_at_n"] for row in rows]
    assert passes == sorted(passes), passes  # pass@n never falls as n grows
    assert all(0.0 <= row[name] <= 1.0 for row in rows for name in ("best_of_n", "weighted_best_of_n", "maj_at_n"))
    tokens = [row["tokens_per_problem"] for row in rows]
    assert tokens[0] > 0 and tokens[-1] <= 4 * 48 + 4  # at most max_new_tokens (48) per sample, EOS included


def test_search_cli_beam_end_to_end(tiny_models, tmp_path, capsys):
    out = tmp_path / "beam"
    args = ["search", "--policy", str(tiny_models / "policy"), "--prm", str(tiny_models / "prm"), "--n", "4",
            "--problems", "2", "--strategy", "beam", "--beam-width", "2", "--expansions", "2", "--step-tokens", "8",
            "--out", str(out), "--config", str(QUICK_CONFIG), "--set", "tracking.mode=disabled"]
    assert main(args) == 0
    for name in ("search.md", "search.jsonl", "accuracy_vs_n.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert "| beam | 4 |" in (out / "search.md").read_text() and "| beam |" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [row["strategy"] for row in rows] == ["best_of_n"] * 3 + ["beam"]
    beam = rows[-1]
    assert beam["tokens_per_problem"] > 0 and 0.0 <= beam["beam"] <= 1.0 and beam["nearest_n"] in (1, 2, 4)
    assert main([*args[:-6], "--out", str(tmp_path / "again"), *args[-4:]]) == 0  # same seed: the same beam row
    again = [json.loads(line) for line in (tmp_path / "again" / "search.jsonl").read_text().splitlines()][-1]
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in beam.items() if k != "seconds"}


def test_search_cli_dvts_end_to_end(tiny_models, tmp_path, capsys):
    out = tmp_path / "dvts"
    assert main(["search", "--policy", str(tiny_models / "policy"), "--prm", str(tiny_models / "prm"), "--n", "2",
                 "--problems", "2", "--strategy", "dvts", "--beam-width", "2", "--expansions", "2", "--step-tokens",
                 "8", "--out", str(out), "--config", str(QUICK_CONFIG), "--set", "tracking.mode=disabled"]) == 0
    assert "| dvts | 4 |" in (out / "search.md").read_text() and "| dvts |" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [row["strategy"] for row in rows] == ["best_of_n"] * 2 + ["dvts"]
    row = rows[-1]
    assert row["tokens_per_problem"] > 0 and 0.0 <= row["dvts"] <= 1.0 and row["nearest_n"] in (1, 2)
    assert (out / "accuracy_vs_n.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--n", "0"], "search --n: must be >= 1, got 0"),
    (["--problems", "0"], "search --problems: must be >= 1, got 0"),
    (["--aggregation", "max"], "search --aggregation: 'max' is not one of min, product, last, mean"),
    (["--strategy", "mcts"], "search --strategy: 'mcts' is not one of best_of_n, beam, dvts"),
    (["--beam-width", "0"], "search --beam-width: must be >= 1, got 0"),
])
def test_bad_search_input_is_one_line_exit_2(extra, message, tmp_path, capsys):
    code = main(["search", "--policy", "p", "--prm", "r", "--out", str(tmp_path / "o"), *extra])
    assert code == 2 and capsys.readouterr().err.strip() == f"prmloop: error: {message}"


def test_a_prm_that_cannot_be_loaded_is_one_line_exit_2(tiny_models, tmp_path, capsys):
    for prm in (tmp_path / "missing", tiny_models / "policy"):  # no model at all; a causal LM, not a reward model
        code = main(["search", "--policy", str(tiny_models / "policy"), "--prm", str(prm), "--out", str(tmp_path / "o"),
                     "--set", "tracking.mode=disabled"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and str(prm) in err[0], err
    assert not (tmp_path / "o").exists()  # nothing written
