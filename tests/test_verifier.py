"""Tests for data/verifier.py: hand-made solutions with literal first-error labels; malformed and huge input."""

import time

from prmloop.data.arith import ArithProblem
from prmloop.data.verifier import final_answer, split_solution, verify

# 7 + 5 * 3 - 4: 7 + 5 = 12, 12 * 3 = 36, 36 - 4 = 32
PROBLEM = ArithProblem(7, (("+", 5), ("*", 3), ("-", 4)))
CORRECT = "7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32"


def test_correct_solution():
    verdict = verify(PROBLEM, CORRECT)
    assert verdict.step_labels == [True, True, True, True]
    assert verdict.first_error == -1
    assert verdict.final_correct


def test_blank_lines_and_whitespace_are_not_steps():
    verdict = verify(PROBLEM, "\n  7 + 5 = 12  \n\n12 * 3 = 36\n36 - 4 = 32\n\nAnswer: 32\n")
    assert verdict.steps == ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 32"]
    assert verdict.step_labels == [True, True, True, True]


def test_wrong_number_at_step_1_marks_it_and_all_later_false():
    # 12 * 3 is 36, not 35; the later steps carry the error forward consistently but are still wrong.
    verdict = verify(PROBLEM, "7 + 5 = 12\n12 * 3 = 35\n35 - 4 = 31\nAnswer: 31")
    assert verdict.step_labels == [True, False, False, False]
    assert verdict.first_error == 1
    assert not verdict.final_correct


def test_wrong_number_at_step_0():
    verdict = verify(PROBLEM, "7 + 5 = 13\n13 * 3 = 39\n39 - 4 = 35\nAnswer: 35")
    assert verdict.step_labels == [False, False, False, False]
    assert verdict.first_error == 0


def test_later_correct_steps_after_an_error_stay_false():
    verdict = verify(PROBLEM, "7 + 5 = 12\n12 * 3 = 35\n36 - 4 = 32\nAnswer: 32")
    assert verdict.step_labels == [True, False, False, False]
    # right final answer reached through a wrong step
    assert verdict.final_correct


def test_right_answer_through_wrong_step():
    # 12 * 3 = 40 is wrong, then 40 - 8 = 32 is not the problem's operation; the answer 32 is still right.
    verdict = verify(PROBLEM, "7 + 5 = 12\n12 * 3 = 40\n40 - 8 = 32\nAnswer: 32")
    assert verdict.final_correct
    assert verdict.step_labels == [True, False, False, False]
    assert verdict.first_error == 1


def test_wrong_operand_with_consistent_arithmetic_is_false():
    # 7 + 6 = 13 is true arithmetic but the problem says + 5.
    verdict = verify(PROBLEM, "7 + 6 = 13\n13 * 3 = 39\n39 - 4 = 35\nAnswer: 35")
    assert verdict.step_labels == [False, False, False, False]


def test_wrong_operator_with_consistent_arithmetic_is_false():
    # 7 * 5 = 35 is true arithmetic but the problem says + 5.
    verdict = verify(PROBLEM, "7 * 5 = 35\n35 * 3 = 105\nAnswer: 105")
    assert verdict.step_labels == [False, False, False]


def test_wrong_left_operand_is_false():
    # 12 * 3 = 36 uses the right operation but starts from 8 instead of the running value.
    verdict = verify(PROBLEM, "8 + 4 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32")
    assert verdict.step_labels == [False, False, False, False]
    assert verdict.final_correct


def test_answer_before_all_operations_is_false():
    verdict = verify(PROBLEM, "7 + 5 = 12\n12 * 3 = 36\nAnswer: 36")
    assert verdict.step_labels == [True, True, False]
    assert not verdict.final_correct


def test_premature_right_answer_is_false_step():
    verdict = verify(PROBLEM, "7 + 5 = 12\nAnswer: 32")
    assert verdict.step_labels == [True, False]
    assert verdict.final_correct


def test_steps_after_the_answer_are_false():
    verdict = verify(PROBLEM, CORRECT + "\n32 + 0 = 32")
    assert verdict.step_labels == [True, True, True, True, False]
    assert verdict.final_correct


def test_wrong_final_answer_value():
    verdict = verify(PROBLEM, "7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 33")
    assert verdict.step_labels == [True, True, True, False]
    assert not verdict.final_correct


def test_last_answer_line_is_the_final_answer():
    assert final_answer("Answer: 5\nAnswer: 32") == "32"
    assert final_answer("Answer: 007") == "7"
    assert final_answer("no answer here") is None


def test_garbage_lines():
    verdict = verify(PROBLEM, "hello\nthe answer is 32\n7+5=12")
    assert verdict.step_labels == [False, False, False]
    assert not verdict.final_correct


def test_empty_text():
    verdict = verify(PROBLEM, "")
    assert verdict.steps == [] and verdict.step_labels == []
    assert verdict.first_error == -1
    assert not verdict.final_correct
    assert verify(PROBLEM, "\n \n\t\n").steps == []


def test_control_characters_and_zero_width():
    verdict = verify(PROBLEM, "\x00\x07\x1b[31m\n7 + 5 = 12\u200b\nAnswer: 32\u00a0x")
    assert verdict.step_labels == [False, False, False]
    assert not verdict.final_correct
    assert verify(PROBLEM, "7 + 5 = 12\u200b").step_labels == [False]


def test_fullwidth_digits_are_outside_the_grammar():
    verdict = verify(PROBLEM, "７ + ５ = １２\n12 * 3 = 36\n36 - 4 = 32\nAnswer: ３２")
    assert verdict.step_labels == [False, False, False, False]
    assert not verdict.final_correct


def test_carriage_returns_are_stripped():
    verdict = verify(PROBLEM, CORRECT.replace("\n", "\r\n"))
    assert verdict.step_labels == [True, True, True, True]


def test_one_megabyte_string_returns_quickly():
    huge = "7 + 5 = 12\n" + "x" * 1_000_000
    started = time.perf_counter()
    verdict = verify(PROBLEM, huge)
    assert time.perf_counter() - started < 1.0
    assert verdict.step_labels == [True, False]
    huge_digits = "9" * 1_000_000
    started = time.perf_counter()
    verdict = verify(PROBLEM, huge_digits)
    assert time.perf_counter() - started < 1.0
    assert verdict.step_labels == [False]
    assert len(split_solution("a\n" * 600_000)) <= 5_000
