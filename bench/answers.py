"""Benchmark of data/answers.py: checks per second on a realistic answer mix, and worst-case time on hostile input.

Run ``python bench/answers.py [--n 10000] [--seed 0]``. Prints markdown tables of measured numbers: a child-process
cold start, throughput per answer kind and for the whole mix (how many checks reached the child), extraction
throughput, and per-input times over the hostile set used by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

HOSTILE = [
    "__import__('os').system('touch /nonexistent/canary')",
    "(lambda: __import__('os').system('id'))()",
    "().__class__.__base__.__subclasses__()",
    "9^9^9^9",
    "10**10**10",
    "10^{10^{10}}",
    "100000!",
    "(10^5)!",
    "(" * 10_000 + "1" + ")" * 10_000,
    "1" * 1_000_000,
    "5\x00",
    r"((10^{1000})^{1000})^{1000}",  # passes the filters: the child is killed at the timeout
    r"\binom{20000}{10000}^{9999}",  # passes the filters too
]
"""Hostile inputs like those of tests/test_answers.py (there with a canary file in a temporary folder)."""


def realistic_pairs(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """``(kind, predicted, reference)`` triples; kinds in rough proportion to GSM8K/MATH-style RL traffic."""
    kinds = ["integer"] * 50 + ["decimal"] * 10 + ["fraction"] * 10 + ["thousands"] * 10 + ["latex"] * 10
    kinds += ["symbolic"] * 10
    return [(kind, *_pair(kind, rng)) for kind in (rng.choice(kinds) for _ in range(n))]


def _pair(kind: str, rng: random.Random) -> tuple[str, str]:
    right = rng.random() < 0.5
    a, b = rng.randint(1, 999), rng.randint(2, 99)
    if kind == "integer":
        return str(a if right else a + rng.choice([-1, 1, 10])), str(a)
    if kind == "decimal":
        return (f"{a / 4:.2f}" if right else f"{a / 4 + 0.1:.2f}"), str(a / 4)
    if kind == "fraction":
        return (rf"\frac{{{a}}}{{{b}}}" if right else f"{a + 1}/{b}"), f"{a}/{b}"
    if kind == "thousands":
        big = a * 1000 + b
        return (f"{big:,}" if right else f"{big + 1:,}"), str(big)
    if kind == "latex":
        latex = [(rf"\boxed{{\dfrac{{{a}}}{{4}}}}", str(a / 4)), (rf"\sqrt{{{b * b}}}", str(b)),
                 (rf"{b}\sqrt{{2}}", rf"\sqrt{{{2 * b * b}}}")]  # fmt: skip
        predicted, reference = rng.choice(latex)
        return (predicted if right else predicted + "+1"), reference
    symbolic = [(f"{a}x+{b}", f"{b}+{a}x"), (f"{b}^3", str(b**3)), (f"(x+{b})^2", f"x^2+{2 * b}x+{b * b}")]
    predicted, reference = rng.choice(symbolic)
    return (predicted if right else predicted + "-1"), reference


def time_checks(pairs: list[tuple[str, str]], answers_match) -> float:
    start = time.perf_counter()
    for predicted, reference in pairs:
        answers_match(predicted, reference)
    return time.perf_counter() - start


def count_symbolic(pairs: list[tuple[str, str]]) -> int:
    """How many pairs the exact path cannot settle (they go to the child process)."""
    from prmloop.data.answers import _numeric_verdict, normalize_answer

    count = 0
    for predicted, reference in pairs:
        left, right = normalize_answer(predicted), normalize_answer(reference)
        if left and right and left.replace(" ", "") != right.replace(" ", ""):
            count += _numeric_verdict(left, right) is None
    return count


def print_throughput(triples: list[tuple[str, str, str]], answers_match) -> None:
    print("| answer kind | checks | to child | checks/s | mean µs/check |")
    print("|---|---:|---:|---:|---:|")
    for kind in sorted({kind for kind, _, _ in triples}) + ["whole mix"]:
        pairs = [(p, r) for k, p, r in triples if kind in (k, "whole mix")]
        elapsed = time_checks(pairs, answers_match)
        rate, mean_us = len(pairs) / elapsed, elapsed / len(pairs) * 1e6
        print(f"| {kind} | {len(pairs)} | {count_symbolic(pairs)} | {rate:,.0f} | {mean_us:,.1f} |")


def print_extraction(triples: list[tuple[str, str, str]], extract_answer) -> None:
    texts = [f"7 + 5 = 12\nAnswer: {p}" if i % 2 else f"So the result is $\\boxed{{{p}}}$." for i, (_, p, _) in
             enumerate(triples)]  # fmt: skip
    start = time.perf_counter()
    for text in texts:
        extract_answer(text)
    elapsed = time.perf_counter() - start
    print(f"\nextract_answer: {len(texts) / elapsed:,.0f} texts/s ({elapsed / len(texts) * 1e6:.1f} µs/text)\n")


def print_hostile(answers_match, timeout_s: float) -> None:
    times = []
    print(f"| hostile input (vs reference 5; timeout {timeout_s} s) | result | ms |")
    print("|---|---|---:|")
    for payload in HOSTILE:
        start = time.perf_counter()
        result = answers_match(payload, "5")
        times.append(time.perf_counter() - start)
        shown = repr(payload if len(payload) <= 40 else payload[:30] + f"... ({len(payload):,} chars)")
        print(f"| `{shown}` | {result} | {times[-1] * 1e3:.2f} |")
    print(f"\nHostile set: worst {max(times) * 1e3:.0f} ms, median {statistics.median(times) * 1e3:.3f} ms.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="checks in the realistic mix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from prmloop.data.answers import DEFAULT_TIMEOUT_S, answers_match, extract_answer

    start = time.perf_counter()
    answers_match("2^3", "8")
    cold_start = time.perf_counter() - start
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"# data/answers.py benchmark ({machine})")
    print(f"\nChild process cold start (first symbolic check in a process): {cold_start * 1e3:.0f} ms\n")
    triples = realistic_pairs(random.Random(args.seed), args.n)
    print_throughput(triples, answers_match)
    print_extraction(triples, extract_answer)
    print_hostile(answers_match, DEFAULT_TIMEOUT_S)


if __name__ == "__main__":
    main()
