"""Tests for data/answers.py (and its child-process checker data/_answer_worker.py): extraction, equivalence,
hostile input (no side effect, bounded time), and use from threads, a multiprocessing Pool and a daemon Process."""

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction

import pytest

from prmloop.data._answer_worker import symbolic_match
from prmloop.data.answers import answers_match, extract_answer, normalize_answer, parse_number

HOSTILE_CEILING_S = 3.0  # a generous sanity ceiling over the ~1 s bound (timeout + child restart), not a benchmark

EQUIVALENT = [
    ("42", "42"),
    ("-7", "-7"),
    ("3.0", "3"),
    ("0.5", "1/2"),
    ("0.5", r"\frac{1}{2}"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"\tfrac{3}{4}", r"\frac{6}{8}"),
    (r"\frac12", "0.5"),
    (r"-\frac{1}{2}", "-0.5"),
    ("1,000", "1000"),
    ("1,234,567.5", "1234567.5"),
    (r"1\,000", "1000"),
    ("0.333333", r"\frac{1}{3}"),  # rounded to 6 places because one side is a decimal
    (r"50\%", "50"),
    ("50%", "0.5"),
    (r"5\text{ dollars}", "5"),
    (r"18 \text{ cm}^2", "18"),
    (r"90^\circ", "90"),
    ("x = 5", "5"),
    (r"$\boxed{12}$", "12"),
    ("(1, 2)", "(1,2)"),
    ("[1, 2)", "[1,2)"),
    ("(0.5, 3)", r"(\frac{1}{2}, 3)"),
    ("−5", "-5"),  # unicode minus
    ("2^3", "8"),
    ("2**10", "1024"),
    (r"\sqrt{4}", "2"),
    (r"3\sqrt{2}", r"\sqrt{18}"),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2"),
    ("2x+1", "1+2x"),
    ("x^2-1", "(x-1)(x+1)"),
    (r"\left(1, 2\right)", "(1,2)"),
    (r"\{1, 2\}", r"\{2, 1\}"),
    ("3!", "6"),
    (r"\begin{pmatrix} 2/2 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
]

NOT_EQUIVALENT = [
    ("41", "42"),
    ("-7", "7"),
    ("0.5", "1/3"),
    ("0.33", r"\frac{1}{3}"),  # 0.330000 != 0.333333
    ("1,000", "100"),
    ("1000", "1,001"),
    (r"\frac{1}{2}", r"\frac{2}{1}"),
    ("51%", "0.5"),
    ("(1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"),
    ("(1,2)", "(1,2,3)"),
    ("2^3", "9"),
    (r"\sqrt{2}", "2"),
    ("2x+1", "2x-1"),
    ("x+1", "y+1"),
    ("", "0"),
    ("5", ""),
    (None, "5"),
    ("1/0", "1"),
]


@pytest.mark.parametrize(("predicted", "reference"), EQUIVALENT)
def test_equivalent_answers_match(predicted, reference):
    assert answers_match(predicted, reference)


@pytest.mark.parametrize(("predicted", "reference"), NOT_EQUIVALENT)
def test_different_answers_do_not_match(predicted, reference):
    assert not answers_match(predicted, reference)


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"So $\boxed{\frac{a^{2}}{b_{1}}}$.", r"\frac{a^{2}}{b_{1}}"),  # nested braces kept
        (r"First \boxed{1}, then \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),  # last boxed wins
        (r"\boxed{\boxed{5}}", "5"),  # the innermost box starts last
        (r"\fbox{7}", "7"),
        (r"The answer is 12. Oops \boxed{13", "12"),  # an unclosed box is no answer
        ("Natalia sold 48 clips.\n#### 1,234", "1,234"),
        ("Thus the answer is 3.5.", "3.5"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),  # Minerva's format
        ("the answer is: -7\n", "-7"),
        ("**Answer:** 42", "42"),
        ("7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", "36"),  # the embedded task's final line
        ("Answer: 3\nWait, no.\nAnswer: 4", "4"),
        ("answer is \\(x+1\\)", "x+1"),
        ("no final answer here", None),
        ("Answer:", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_on_huge_text_is_none_or_short():
    assert extract_answer("x" * 1_000_000) is None
    assert extract_answer("\\boxed{" * 200_000) is None
    assert extract_answer("Answer: " + "9" * 1_000_000) == "9" * 1000  # cut to MAX_ANSWER_CHARS
    assert extract_answer("Answer: 5" + "$." * 500_000) == "5"
    assert extract_answer("answer is " * 200_000) is None


def test_parse_number_literals():
    assert parse_number("-1,234.5") == (Fraction(-2469, 2), True, False)  # -1234.5 = -2469/2
    assert parse_number(r"\frac{3}{-6}") == (Fraction(-1, 2), False, False)
    assert parse_number(r"12.5\%") == (Fraction(25, 2), True, True)
    assert parse_number("1/0") is None
    assert parse_number("1,00") is None  # not a thousands group


def test_normalize_strips_decoration():
    assert normalize_answer(r"$\left( 1,\! 2 \right)$") == "( 1, 2 )"
    assert normalize_answer(r"5\text{ apples}") == "5"
    assert normalize_answer(r"\text{yes}") == "yes"


# ---------------------------------------------------------------- hostile input


def hostile_inputs(canary: str) -> list[str]:
    return [
        f"__import__('os').system('touch {canary}')",
        f"open('{canary}','w').write('x')",
        f"(lambda: __import__('os').system('touch {canary}'))()",
        "().__class__.__base__.__subclasses__()",
        "lambda x: x",
        "9^9^9^9",
        "10**10**10",
        "10^{10^{10}}",
        "2^{100000000}",
        "100000!",
        "(10^5)!",
        "(" * 10_000 + "1" + ")" * 10_000,
        "1" * 1_000_000,
        "\\frac{" * 5_000,
        "5\x00",
        "\x1b[31m5",
        r"\sum_{k=1}^{10^{9}} k^k",
        r"((10^{1000})^{1000})^{1000}",  # passes the filters: the child is killed at the timeout
    ]


def test_hostile_inputs_are_false_fast_and_harmless(tmp_path):
    canary = tmp_path / "canary"
    for payload in hostile_inputs(str(canary)):
        for predicted, reference in ((payload, "5"), ("5", payload)):
            start = time.monotonic()
            assert answers_match(predicted, reference) is False, payload[:60]
            assert time.monotonic() - start < HOSTILE_CEILING_S, payload[:60]
        extract_answer(f"The answer is {payload}")
        extract_answer(f"\\boxed{{{payload}}}")
    assert not canary.exists()


def test_symbolic_engine_alone_never_runs_code(tmp_path):
    # Straight to the child process, past every filter: the parser itself must not execute anything.
    canary = tmp_path / "canary"
    for payload in hostile_inputs(str(canary))[:3]:
        assert symbolic_match(payload, "5", timeout_s=1.0) is False
    assert not canary.exists()


def test_a_timed_out_child_is_replaced():
    start = time.monotonic()
    assert answers_match(r"((10^{1000})^{1000})^{1000}", "1", timeout_s=0.2) is False
    assert time.monotonic() - start < HOSTILE_CEILING_S
    assert answers_match("2^3", "8")  # served by the replacement child


# ---------------------------------------------------------------- threads and processes

MIXED = [("0.5", r"\frac{1}{2}", True), ("2^3", "8", True), ("2x+1", "1+2x", True), ("7", "8", False),
         (r"\sqrt{2}", "2", False), ("9^9^9^9", "1", False)]  # fmt: skip


def _check_all(cases):
    return [answers_match(predicted, reference) for predicted, reference, _ in cases]


def _report_from_child(queue):
    queue.put(_check_all(MIXED))


def test_from_threads():
    results = {}

    def run(index):
        results[index] = _check_all(MIXED)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [want for _, _, want in MIXED]
    assert results == {index: expected for index in range(4)}


def test_from_a_spawned_pool_worker():
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # Pool workers are daemon processes
        got = pool.starmap(answers_match, [(predicted, reference) for predicted, reference, _ in MIXED])
    assert got == [want for _, _, want in MIXED]


def test_from_a_forked_daemon_process_after_the_parent_used_its_own_children():
    assert answers_match("2^3", "8")  # the parent now holds idle children, which the fork must not share
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_report_from_child, args=(queue,), daemon=True)
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=10)
    assert got == [want for _, _, want in MIXED]
    assert answers_match("2^3", "8")  # and the parent's children still work


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_children_exit_with_their_parent():
    script = "from prmloop.data.answers import answers_match; import prmloop.data._answer_worker as w; answers_match('2^3', '8'); "
    script += "print(w._POOL.idle[0].proc.pid)"
    pid = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _is_running(pid):
        time.sleep(0.05)
    assert not _is_running(pid)


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_child_that_cannot_import_math_verify_is_a_user_error_not_a_silent_false():
    script = (
        "import sys\nfrom prmloop.data.answers import answers_match\nfrom prmloop.utils.errors import UserError\n"
        "sys.path[:] = [p for p in sys.path if '-packages' not in p]  # the child gets this path\n"
        "try:\n    answers_match('2^3', '8')\nexcept UserError as error:\n    print('UserError', error)\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.startswith("UserError data/_answer_worker.py: the symbolic answer checker cannot import math-verify")
