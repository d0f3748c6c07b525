"""Findings on the study's research questions, read from the arms' logged evaluations, each met / not met.

S1: process vs outcome supervision; S2: iterative vs fixed reward model; S4: reward hacking, sum vs min credit
(loop/hacking.py); S3, sample efficiency and compute, is its own report section (loop/efficiency.py).

Goals: S1 - process supervision reaches the outcome arm's final accuracy in <= 0.7x the outcome arm's RL steps; S2 -
the iterative arm's final accuracy above the fixed arm's, the 95% CI of the difference above 0, read beside each
round's PRM F1 on the current policy's samples (on the curriculum band's problems where logged) with its CI, and a
measured reason when it is not met. A difference whose CI contains 0 is no difference. Every verdict line carries the
numbers it was decided on. Statistics: loop/report_stats.py.
"""

from __future__ import annotations

import math

from .hacking import hacking_section as hacking_lines
from .report_stats import (
    ArmRuns,
    ci_excludes_zero,
    ci_text,
    difference_ci,
    f1_key,
    mean_ci,
    mixed,
    number_text,
    paired_change,
    reach_step,
)

S1_STEP_RATIO = 0.7
"""S1: process supervision should need at most this fraction of the outcome arm's RL steps."""


def step_ratio(process_steps: int | None, outcome_steps: int | None) -> float | None:
    """Process arm's RL steps to reach the target over the outcome arm's (None when either never reached it)."""
    if process_steps is None or not outcome_steps:
        return None
    return process_steps / outcome_steps


def _verdict(met: bool | None) -> str:
    return "**not measured**" if met is None else ("**met**" if met else "**not met**")


def s1_lines(arms: list[ArmRuns], key: str = "accuracy") -> list[str]:
    """S1 on held-out ``key``: ``accuracy`` (the answer is right) or ``trace_accuracy`` (every step right too)."""
    title = "S1 (process vs outcome)" if key == "accuracy" else "S1 by trace accuracy (every step right)"
    noun = key.replace("_", " ")
    outcome = next((a for a in arms if a.info.supervision == "outcome" and a.finals(key)), None)
    process = [a for a in arms if a.info.supervision == "process" and not mixed(a) and a.finals(key)]
    if outcome is None or not process:
        return [f"- {title}: {_verdict(None)}: it needs an outcome arm and a process arm."]
    target = mean_ci(outcome.finals(key))[0]
    outcome_steps = reach_step(outcome, target, key)
    lines, ratios = [], []
    for arm in process:
        ratio = step_ratio(reach_step(arm, target, key), outcome_steps)
        ratios.append(ratio)
        diff, half = difference_ci(arm.finals(key), outcome.finals(key))
        reach = "never reaches it" if ratio is None else f"reaches it at {ratio:.2f}x the steps"
        if not outcome_steps:
            reach = "no steps to compare"
        lines.append(f"  - `{arm.info.arm}`: {reach}; final {noun} {mean_ci(arm.finals(key))[0]:.3f} vs "
                     f"{target:.3f}, difference {diff:+.3f} ± {number_text(half)} (95% CI, n = {len(arm.finals(key))} vs "
                     f"{len(outcome.finals(key))} seeds)")
    goal = (f"Goal: a process arm reaches `{outcome.info.arm}`'s final seed-mean {noun} {target:.3f} in <= "
            f"{S1_STEP_RATIO}x its RL steps")
    if not outcome_steps:  # reached at step 0: the outcome arm ended no better than it started
        return [(f"- {title}: {_verdict(None)}. {goal}, but `{outcome.info.arm}` ended no better than "
                "its start, so there are no steps to compare; the final values:"), *lines]
    met = any(r is not None and r <= S1_STEP_RATIO for r in ratios)
    return [f"- {title}: {_verdict(met)}. {goal} (it reached it at RL step {outcome_steps}).", *lines]


def s2_lines(arms: list[ArmRuns]) -> list[str]:
    """S2 for each credit that has both a fixed and an iterative process arm: F1 per round and final accuracy."""
    key = f1_key(arms)
    lines = []
    for credit in ("sum", "min"):
        pair = {a.info.rm_update: a for a in arms if a.info.supervision == "process" and a.info.reward_source == "prm"
                and a.info.credit == credit and not mixed(a)}
        if {"fixed", "iterative"} <= set(pair):
            lines += _s2_pair(pair["iterative"], pair["fixed"], key)
    return lines or [f"- S2 (iterative vs fixed PRM): {_verdict(None)}: it needs process-prm-iterative and -fixed arms."]


def _s2_pair(iterative: ArmRuns, fixed: ArmRuns, key: str) -> list[str]:
    where = "the current curriculum band's" if key.startswith("band_") else "the"
    f1 = {"iterative": iterative.round_values(key), "fixed": fixed.round_values(key)}
    rounds = sorted((set(f1["iterative"]) & set(f1["fixed"])) - {0})
    name = f"S2 (iterative vs fixed PRM, {iterative.info.credit} credit)"
    if not rounds:
        return [f"- {name}: {_verdict(None)}: F1 was logged for no round after the first reward model."]
    diff, half = difference_ci(iterative.finals(), fixed.finals())
    met = ci_excludes_zero(diff, half) > 0
    per_round = "; ".join(f"r{r} {_mean_text(f1['iterative'][r])} vs {_mean_text(f1['fixed'][r])} "
                          f"(difference {ci_text(*difference_ci(f1['iterative'][r], f1['fixed'][r]))})" for r in rounds)
    stale = paired_change(f1["fixed"][rounds[0]], f1["fixed"][rounds[-1]])
    gaps = {r: difference_ci(f1["iterative"][r], f1["fixed"][r]) for r in rounds}
    staler = [r for r in rounds if ci_excludes_zero(*gaps[r]) > 0]
    missed_key = key.replace("first_error_f1", "missed_error_rate")
    if met:
        why = "Retraining paid off in accuracy."
    elif staler:
        last = staler[-1]
        missed = {update: arm.round_values(missed_key).get(last, []) for update, arm in
                  (("iterative", iterative), ("fixed", fixed))}
        why = (f"The fixed PRM is measurably staler in round(s) {', '.join(f'r{r}' for r in staler)} (F1 "
               f"{ci_text(*gaps[last])} behind in r{last}, where it passed {_mean_text(missed['fixed'])} of the wrong "
               f"samples as right vs {_mean_text(missed['iterative'])} for the iterative PRM), yet accuracy did not "
               f"follow: these seeds resolve only accuracy differences beyond ± {number_text(half)}.")
    else:
        why = ("The fixed PRM did not go measurably staler than the iterative one (the F1 difference's CI contains 0 "
               "in every round), so retraining had little to fix.")
    return [(f"- {name}: {_verdict(met)}. Goal: the iterative arm's final accuracy above the fixed arm's (95% CI of "
             f"the difference above 0). {why}"),
            (f"  - PRM first-error F1 on {where} held-out samples of the current policy, iterative vs fixed (mean ± "
             f"95% CI, n = {len(iterative.seeds)} vs {len(fixed.seeds)} seeds): {per_round}"),
            f"  - fixed PRM's F1 r{rounds[0]} -> r{rounds[-1]}: {ci_text(*stale)} (paired over seeds)",
            f"  - final accuracy iterative − fixed: {ci_text(diff, half)} (95% CI)"]


def _mean_text(values: list[float]) -> str:
    mean, half = mean_ci(values)
    return number_text(mean) if not math.isfinite(half) else f"{mean:.3f} ± {half:.3f}"


def findings_section(arms: list[ArmRuns]) -> list[str]:
    """The S1/S2/S4 verdicts, for the top of report.md."""
    traced = s1_lines(arms, "trace_accuracy") if any(arm.finals("trace_accuracy") for arm in arms) else []
    return ["## The questions", "", *s1_lines(arms), *traced, *s2_lines(arms), *hacking_lines(arms), ""]
