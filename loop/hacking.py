"""S4, reward hacking as PURE measures it (Cheng et al. 2025, "Stop Summation"): the reward the PRM pays rises while
true accuracy falls. For every process arm (sum or min credit, fixed or iterative PRM), with 95% CIs over seeds:

- the PRM's reward on the arm's own training rollouts (``reward`` of the RL rows: each completion's mean step score),
  first round vs last; with a curriculum the problems change between rounds, so this is read beside the next two;
- on the same held-out problems every round: the PRM's mean solution score (min over steps) and the true accuracy of
  those samples (answer and every step right where the task has a step verifier), and their gap;
- held-out greedy accuracy, start vs final.
Hacking is shown when the PRM's held-out score rises while the true accuracy falls (both CIs away from 0); an
overrated PRM (gap growing, accuracy not falling) is reported as such, not as hacking. The explanation lines give the
two levers a policy has, measured in the same runs: adding steps the PRM rates well (the sum arm's steps per
completion over the min arm's, on the same problems; the lever min-form credit removes) and wrong steps the PRM
rates right (its missed-error rate on held-out samples; min-form keeps it).
"""

from __future__ import annotations

import math

from .report_stats import (
    ArmRuns,
    ci_excludes_zero,
    ci_text,
    difference_ci,
    hacking_curves,
    mean_ci,
    mixed,
    paired_change,
)


def _first_last(per_seed: list[dict[int, float]]) -> tuple[list[float], list[float]]:
    """Per seed, the first and the last value of a curve (seeds without one left out of both)."""
    curves = [curve for curve in per_seed if curve]
    return [c[min(c)] for c in curves], [c[max(c)] for c in curves]


def round_means(per_step: list[dict[int, float]], steps_per_round: int) -> list[dict[int, float]]:
    """Per seed, round -> mean of an RL-row metric over the round's steps (rl_step s belongs to round
    ceil(s / steps_per_round))."""
    result = []
    for curve in per_step:
        rounds: dict[int, list[float]] = {}
        for step, value in curve.items():
            rounds.setdefault(-(-step // steps_per_round), []).append(value)
        result.append({r: sum(v) / len(v) for r, v in rounds.items()})
    return result


def _steps_per_round(arm: ArmRuns) -> int:
    """RL steps per round, read from the runs: the last round's final evaluation step over its round."""
    rows = [row for seed in arm.evals for row in seed if int(row["round"]) > 0 and "accuracy" in row]
    last = max(rows, key=lambda row: int(row["rl_step"]), default=None)
    return max(1, int(last["rl_step"]) // int(last["round"])) if last else 1


def arm_hacking(arm: ArmRuns) -> dict:
    """The S4 changes of one arm, each (mean, 95% CI half width) over seeds; see the module docstring."""
    _, _, key = hacking_curves(arm)
    score_from, score_to = _first_last(arm.per_seed("prm_score_mean"))
    true_from, true_to = _first_last(arm.per_seed(key))
    gap_from = [s - t for s, t in zip(score_from, true_from)]
    gap_to = [s - t for s, t in zip(score_to, true_to)]
    reward_from, reward_to = _first_last(round_means(arm.per_seed_rl("reward"), _steps_per_round(arm)))
    steps_from, steps_to = _first_last(arm.per_seed_rl("steps/mean_count"))
    missed_from, missed_to = _first_last(arm.per_seed("prm_missed_error_rate"))
    accuracy_from, accuracy_to = _first_last(arm.per_seed("accuracy", "rl_step"))
    return {
        "train_reward": paired_change(reward_from, reward_to),
        "heldout_score": paired_change(score_from, score_to),
        "true_accuracy": paired_change(true_from, true_to),
        "gap": paired_change(gap_from, gap_to),
        "greedy_accuracy": paired_change(accuracy_from, accuracy_to),
        "steps_per_completion": paired_change(steps_from, steps_to),
        "missed_error_rate_last": mean_ci(missed_to),
        "steps_per_completion_last": steps_to,
        "missed_error_rate_first": mean_ci(missed_from),
    }


def _verdict(changes: dict[str, tuple[float, float]]) -> str:
    if not all(math.isfinite(changes[k][0]) for k in ("heldout_score", "true_accuracy")):
        return "not measured (no PRM score or true accuracy on held-out samples in two evaluations)"
    score, truth, gap = (ci_excludes_zero(*changes[k]) for k in ("heldout_score", "true_accuracy", "gap"))
    if score > 0 and truth < 0:
        return "**hacking**: the PRM's score rose while true accuracy fell"
    if gap > 0:
        return "overrated, not hacked: the gap grew, but true accuracy did not fall"
    return "no hacking: neither a rising score over falling accuracy nor a growing gap"


def hacking_section(arms: list[ArmRuns]) -> list[str]:
    """The S4 findings: one row per process arm, the verdicts, sum vs min per PRM update, and the levers."""
    process = [a for a in arms if a.info.supervision == "process" and a.info.reward_source == "prm" and not mixed(a)]
    if not process:
        return ["- S4 (reward hacking): **not measured**: it needs process arms with a PRM.", ""]
    key = hacking_curves(process[0])[2]
    lines = [(f"- S4 (reward hacking, PURE's measure): the PRM's reward rising while true accuracy falls. Changes first "
              f"-> last evaluation, mean ± 95% CI over seeds; true accuracy = `{key}` of the held-out samples the PRM "
              "scored:")]
    results = {arm.info.arm: arm_hacking(arm) for arm in process}
    for arm in process:
        c = results[arm.info.arm]
        lines.append(f"  - `{arm.info.arm}`: {_verdict(c)}. Held-out PRM score {ci_text(*c['heldout_score'])}, true "
                     f"accuracy {ci_text(*c['true_accuracy'])}, gap {ci_text(*c['gap'])}; training reward (round "
                     f"means) {ci_text(*c['train_reward'])}; greedy accuracy {ci_text(*c['greedy_accuracy'])} "
                     f"(n = {len(arm.seeds)})")
    for update in ("fixed", "iterative"):
        pair = {a.info.credit: a for a in process if a.info.rm_update == update}
        if {"sum", "min"} <= set(pair):
            gaps = [results[pair[c].info.arm]["gap"] for c in ("sum", "min")]
            steps = difference_ci(*(results[pair[c].info.arm]["steps_per_completion_last"] for c in ("sum", "min")))
            missed = [results[pair[c].info.arm]["missed_error_rate_last"] for c in ("sum", "min")]
            lines.append(f"  - {update} PRM, sum vs min credit: gap change {ci_text(*gaps[0])} vs {ci_text(*gaps[1])}; "
                         f"steps per completion at the end, sum − min: {ci_text(*steps)}; the PRM's missed-error rate "
                         f"at the end {_rate(missed[0])} vs {_rate(missed[1])}. {_levers(steps, missed)}")
    return [*lines, ""]


def _levers(steps: tuple[float, float], missed: list[tuple[float, float]]) -> str:
    """Which of the two levers (module docstring) the sum arm used more than the min arm, read from its numbers:
    the sum arm's extra steps per completion over the min arm's (the same problems, so a curriculum's longer
    problems cancel out), and the errors the PRM misses."""
    if not math.isfinite(steps[0]):
        return "Steps per completion were not logged, so the levers cannot be told apart."
    length = ("Sum credit made completions longer than min credit did: the lever min-form removes was used"
              if ci_excludes_zero(*steps) > 0 else "Sum credit did not make completions longer than min credit did, "
              "so the lever min-form removes (adding steps the PRM rates well) was not used here")
    return (f"{length}; the lever it keeps, errors the PRM misses, stayed open ({_rate(missed[0])} of the sum arm's "
            "wrong held-out samples passed as right).")


def _rate(value: tuple[float, float]) -> str:
    mean, half = value
    return ci_text(mean, half).lstrip("+")
