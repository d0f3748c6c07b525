"""Tests for data/arith.py: seeded determinism, train/eval disjointness, reference steps, grammar and config checks."""

import dataclasses
import random

import pytest

from prmloop.data import arith
from prmloop.data.arith import ArithProblem, check_config, generate, parse_question, split_of
from prmloop.data.config import DataConfig
from prmloop.data.verifier import verify
from prmloop.utils.errors import UserError


def test_same_seed_gives_identical_problems():
    cfg = DataConfig()
    assert generate(cfg, 50, "train", seed=3) == generate(cfg, 50, "train", seed=3)


def test_different_seed_gives_different_problems():
    cfg = DataConfig()
    first = [p.question for p in generate(cfg, 50, "train", seed=3)]
    second = [p.question for p in generate(cfg, 50, "train", seed=4)]
    assert first != second


def test_train_and_eval_are_disjoint():
    cfg = DataConfig()
    train = {p.question for p in generate(cfg, 500, "train", seed=0)}
    held_out = {p.question for p in generate(cfg, 100, "eval", seed=0)}
    assert len(train) == 500 and len(held_out) == 100
    assert not train & held_out
    assert all(split_of(q) == "eval" for q in held_out)


def test_reference_steps_are_all_correct():
    for problem in generate(DataConfig(), 100, "train", seed=1):
        verdict = verify(parse_question(problem.question), "\n".join(problem.reference_steps))
        assert all(verdict.step_labels) and verdict.final_correct
        assert len(verdict.step_labels) == len(problem.reference_steps)
        assert problem.reference_steps[-1] == f"Answer: {problem.answer}"


def test_literal_problem_structure():
    # 7 + 5 = 12, 12 * 3 = 36, 36 - 4 = 32
    arith = parse_question("7 + 5 * 3 - 4 = ? (left to right)")
    assert arith == ArithProblem(7, (("+", 5), ("*", 3), ("-", 4)))
    assert arith.reference_steps == ("7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 32")
    assert arith.answer == 32
    assert arith.question == "7 + 5 * 3 - 4 = ? (left to right)"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7 = ? (left to right)",  # no operation
        "7 + 5 = ?",  # missing suffix
        "7 / 5 = ? (left to right)",  # operator outside the grammar
        "-7 + 5 = ? (left to right)",  # negative start
        "7 +5 = ? (left to right)",  # spacing
        "What is 7 + 5?",
        "1234567890 + 1 = ? (left to right)",  # 10-digit number
    ],
)
def test_parse_question_rejects_text_outside_grammar(text):
    with pytest.raises(UserError):
        parse_question(text)


@pytest.mark.parametrize(
    "overrides",
    [
        {"operators": ""},
        {"operators": "+/"},
        {"min_steps": 0},
        {"min_steps": 5, "max_steps": 4},
        {"max_steps": 33},
        {"start_max": 0},
        {"operand_max": 0},
        {"value_max": 0},
        {"mul_max": 1},
        {"start_max": 100, "value_max": 50},
    ],
)
def test_check_config_rejects_bad_knobs(overrides):
    with pytest.raises(UserError):
        check_config(dataclasses.replace(DataConfig(), **overrides))


def test_check_config_accepts_defaults_and_generate_rejects_bad_split():
    check_config(DataConfig())
    with pytest.raises(UserError):
        generate(DataConfig(), 5, "test")


def test_too_many_problems_for_knobs_raises():
    # start 1..1, one '+ 1' step: only "1 + 1 = ? (left to right)" exists.
    cfg = DataConfig(min_steps=1, max_steps=1, start_max=1, operand_max=1, operators="+")
    with pytest.raises(UserError):
        generate(cfg, 5, "train")


def test_parse_question_rejects_fullwidth_digits():
    with pytest.raises(UserError):
        parse_question("７ + ５ = ? (left to right)")


# ---- the slipping teacher (data.slip_rate): the sparse-reward regime's SFT data


def test_slips_only_on_a_carrying_addition():
    assert arith.slips(47, "+", 8)  # 7 + 8 = 15 >= 10: a carry
    assert arith.slips(45, "+", 15)  # 5 + 5 = 10: a carry
    assert not arith.slips(41, "+", 8)  # 1 + 8 = 9: none
    assert not arith.slips(52, "-", 7)  # a borrow is no slip unless asked
    assert not arith.slips(47, "*", 3)  # nor is multiplication


def test_borrow_slips_only_when_asked_and_only_on_a_borrowing_subtraction():
    assert arith.slips(52, "-", 7, borrow=True)  # 2 < 7: a borrow
    assert arith.slips(13, "-", 8, borrow=True)
    assert not arith.slips(58, "-", 7, borrow=True)  # 8 >= 7: none
    assert not arith.slips(50, "-", 10, borrow=True)  # 0 >= 0: none
    assert not arith.slips(47, "*", 3, borrow=True)
    assert arith.slips(47, "+", 8, borrow=True)  # carries still slip


def test_slipped_result_is_the_tens_digit_one_short():
    assert arith.slipped_result(47, "+", 8) == 45  # 55 with the carry forgotten
    assert arith.slipped_result(95, "+", 7) == 92  # 102 with the carry forgotten


def test_borrow_slip_leaves_the_tens_digit_one_too_many():
    assert arith.slipped_result(43, "-", 8) == 45  # 35 with the borrow forgotten
    assert arith.slipped_result(13, "-", 8) == 15  # 5 with the borrow forgotten
    assert arith.slipped_result(102, "-", 15) == 97  # 87 with the borrow forgotten


def test_teacher_at_rate_one_slips_every_carry_and_carries_the_value_on():
    problem = arith.ArithProblem(47, (("+", 8), ("*", 2), ("+", 3), ("+", 9)))
    steps = arith.teacher_steps(problem, 1.0, random.Random(0))
    # 47 + 8 slips to 45; 45 * 2 = 90; 90 + 3 = 93 carries nothing; 93 + 9 slips to 92 (102 - 10); the answer is 92
    assert steps == ("47 + 8 = 45", "45 * 2 = 90", "90 + 3 = 93", "93 + 9 = 92", "Answer: 92")
    assert arith.teacher_steps(problem, 0.0, random.Random(0)) == problem.reference_steps


def test_teacher_with_borrow_slips_both_and_only_when_asked():
    problem = arith.ArithProblem(43, (("-", 8), ("+", 7), ("-", 20)))
    # 43 - 8 slips to 45 (35 + 10); 45 + 7 slips to 42 (52 - 10); 42 - 20 = 22 borrows nothing; the answer is 22
    steps = arith.teacher_steps(problem, 1.0, random.Random(0), borrow=True)
    assert steps == ("43 - 8 = 45", "45 + 7 = 42", "42 - 20 = 22", "Answer: 22")
    # without borrow slips only the carry slips: 43 - 8 = 35; 35 + 7 = 42 (32 + 10, a slip); 42 - 20 = 22
    assert arith.teacher_steps(problem, 1.0, random.Random(0)) == ("43 - 8 = 35", "35 + 7 = 32", "32 - 20 = 12",
                                                                   "Answer: 12")


def test_teacher_slip_frequency_follows_the_rate_and_answers_stay_true():
    cfg = DataConfig(min_steps=4, max_steps=6, slip_rate=0.75, n_train=400, start_max=99, operand_max=9, value_max=99)
    problems = arith.generate(cfg, 400, "train")
    taught = arith.with_teacher_slips(problems, 0.75, seed=0)
    assert [p.answer for p in taught] == [p.answer for p in problems]
    assert taught == arith.with_teacher_slips(problems, 0.75, seed=0)  # seeded
    slipped = chances = 0
    for original, new in zip(problems, taught):
        parsed = arith.parse_question(original.question)
        value = parsed.start
        for (op, operand), step in zip(parsed.operations, new.reference_steps):
            head, result = step.split(" = ")
            value = int(head.split(" ")[0])
            if arith.slips(value, op, operand):
                chances += 1
                slipped += int(result) == arith.slipped_result(value, op, operand)
            else:
                assert int(result) == arith.apply(value, op, operand)
    assert chances > 300
    assert 0.68 < slipped / chances < 0.82  # binomial, n > 300: 0.75 ± 3 sd is about ± 0.07


def test_slip_rate_is_checked():
    with pytest.raises(UserError, match="data.slip_rate"):
        arith.check_config(DataConfig(slip_rate=1.5))
    with pytest.raises(UserError, match="data.slip_borrow: needs data.slip_rate"):
        arith.check_config(DataConfig(slip_borrow=True))
