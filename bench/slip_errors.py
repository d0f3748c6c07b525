"""Where a warm start of the slipping-teacher regime goes wrong: the first wrong step of each greedy held-out solution,
sorted into 'the taught slip' (a carry, or with data.slip_borrow a borrow, forgotten) and every other kind of error.

Run: ``python bench/slip_errors.py --policy runs/sft_band/<name>-s0 --config configs/compare.yaml [--problems 500]``.
A policy whose wrong answers come mostly from the taught slip is right on its other steps, so its step labels say what
its final answers do not (the sparse-reward regime of configs/compare.yaml).
"""

from __future__ import annotations

import argparse
from collections import Counter

from prmloop.data import arith
from prmloop.data.prompts import Prompter
from prmloop.data.tasks import get_task
from prmloop.loop.config import load_config
from prmloop.policy.accuracy import complete_problems
from prmloop.policy.load import load_policy


def error_kind(problem: arith.ArithProblem, steps: list[str], labels: list[bool], borrow: bool = False) -> str:
    """The kind of a solution's first wrong step (labels from the exact verifier)."""
    first = next((index for index, ok in enumerate(labels) if not ok), -1)
    if first < 0:
        return "all steps right"
    if first >= len(problem.operations):
        return "the answer line"
    value = problem.start
    for op, operand in problem.operations[:first]:
        value = arith.apply(value, op, operand)
    op, operand = problem.operations[first]
    if arith.slips(value, op, operand, borrow):
        taught = f"{value} {op} {operand} = {arith.slipped_result(value, op, operand)}"
        return "the taught slip" if steps[first] == taught else f"a slip-prone {op} step, wrong otherwise"
    return f"another {op} step"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--config", default="configs/compare.yaml")
    parser.add_argument("--problems", type=int, default=500)
    args = parser.parse_args()
    cfg = load_config(args.config)
    task = get_task(cfg.data)
    _, held_out = task.problems()
    problems = held_out[: args.problems]
    model, tokenizer = load_policy(args.policy, cfg.policy.dtype)
    prompter = Prompter.of(cfg.policy, tokenizer)
    completions = [texts[0] for texts in complete_problems(model, tokenizer, prompter, problems,
                                                           cfg.policy.max_new_tokens)]
    kinds = Counter()
    for problem, completion in zip(problems, completions):
        steps = task.split(completion)
        labels = task.verify_steps(problem, steps)
        kinds[error_kind(arith.parse_question(problem.question), steps, labels, cfg.data.slip_borrow)] += 1
    wrong = len(problems) - kinds["all steps right"]
    print(f"{args.policy}: {len(problems)} held-out problems, greedy")
    for kind, count in kinds.most_common():
        print(f"| {kind} | {count} | {count / len(problems):.3f} |")
    print(f"taught slip / wrong solutions: {kinds['the taught slip'] / max(1, wrong):.3f}")


if __name__ == "__main__":
    main()
