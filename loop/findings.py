"""Findings on the study's research questions, read from the arms' logged evaluations, each met / not met.

S1: process vs outcome supervision; S2: iterative vs fixed reward model; S4: reward hacking, sum vs min credit.

Goals the study set itself: S1 - process supervision reaches the outcome arm's final accuracy in <= 0.7x the outcome arm's RL
steps; S2 - the fixed PRM's first-error F1 on the current policy's samples falls from round 1 to the last round while
the iterative PRM's stays >= 0.8, and iterative final accuracy >= fixed; S4 - the sum-credit arm's reward-hacking gap
grows over rounds and the min-credit (or outcome-mix) arm's growth is at most half of it. Every verdict line carries
the numbers it was decided on, so "not met" can be read against the logs. Statistics: loop/report_stats.py.
"""

from __future__ import annotations

import math

from .report_stats import (
    ArmRuns,
    hacking_curves,
    mean_ci,
    mixed,
    number_text,
    reach_step,
    sample_variance,
    seed_curve,
    t_quantile_975,
)

S1_STEP_RATIO = 0.7
"""S1: process supervision should need at most this fraction of the outcome arm's RL steps."""
S2_ITERATIVE_F1 = 0.8
"""S2: the iterative PRM's first-error F1 on current samples should stay at least this."""
S2_DECAY = 0.01
"""S2: the fixed PRM's F1 "decays" when its last round is at least this much below its first. A smaller change is
within the sampling noise of an F1 on about a thousand held-out solutions (its standard error is about 0.01)."""
S4_CLOSED_FRACTION = 0.5
"""S4: the min/mix arm should close at least this fraction of the sum arm's gap growth."""


def difference_ci(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean(a) - mean(b), 95% half width) with Welch's standard error and the smaller sample's t quantile
    (conservative); the half width is nan when either side has fewer than 2 values."""
    if not a or not b:
        return math.nan, math.nan
    diff = mean_ci(a)[0] - mean_ci(b)[0]
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan
    standard_error = math.sqrt(sample_variance(a) / len(a) + sample_variance(b) / len(b))
    return diff, t_quantile_975(min(len(a), len(b)) - 1) * standard_error


def step_ratio(process_steps: int | None, outcome_steps: int | None) -> float | None:
    """Process arm's RL steps to reach the target over the outcome arm's (None when either never reached it)."""
    if process_steps is None or not outcome_steps:
        return None
    return process_steps / outcome_steps


def gap_growth(gaps: dict[int, float]) -> float | None:
    """Last round's gap minus the first round's (None with fewer than two rounds)."""
    if len(gaps) < 2:
        return None
    rounds = sorted(gaps)
    return gaps[rounds[-1]] - gaps[rounds[0]]


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
    def pick(update: str) -> ArmRuns | None:
        return next((a for a in arms if a.info.supervision == "process" and a.info.rm_update == update
                     and a.info.credit == "sum" and not mixed(a)), None)

    iterative, fixed = pick("iterative"), pick("fixed")
    if iterative is None or fixed is None:
        return [f"- S2 (iterative vs fixed PRM): {_verdict(None)}: it needs process-prm-iterative and -fixed arms."]
    f1 = {name: {p[0]: p[1] for p in seed_curve(arm.per_seed("prm_first_error_f1")) if p[0] >= 1}
          for name, arm in (("iterative", iterative), ("fixed", fixed))}
    if len(f1["fixed"]) < 2 or not f1["iterative"]:
        return [f"- S2 (iterative vs fixed PRM): {_verdict(None)}: F1 was logged for fewer than two rounds."]
    rounds = sorted(f1["fixed"])
    change = f1["fixed"][rounds[-1]] - f1["fixed"][rounds[0]]
    decays = change <= -S2_DECAY
    holds = min(f1["iterative"].values()) >= S2_ITERATIVE_F1
    diff, half = difference_ci(iterative.finals(), fixed.finals())
    met = decays and holds and diff >= 0
    per_round = ", ".join(f"r{r} {number_text(f1['iterative'].get(r))} vs {number_text(f1['fixed'].get(r))}" for r in rounds)
    return [(f"- S2 (iterative vs fixed PRM): {_verdict(met)}. Goal: the fixed PRM's first-error F1 on the current "
            f"policy's samples decays while the iterative one stays >= {S2_ITERATIVE_F1}, and iterative final "
            f"accuracy >= fixed."),
            (f"  - F1 iterative vs fixed by round: {per_round} (fixed r{rounds[0]} -> r{rounds[-1]}: {change:+.3f}, "
            f"decays by >= {S2_DECAY}: {'yes' if decays else 'no'}; "
            f"iterative >= {S2_ITERATIVE_F1} throughout: {'yes' if holds else 'no'})"),
            f"  - final accuracy iterative - fixed: {diff:+.3f} ± {number_text(half)} (95% CI)"]


def s4_lines(arms: list[ArmRuns]) -> list[str]:
    def gaps(arm: ArmRuns) -> dict[int, float]:
        scores, accuracy, _key = hacking_curves(arm)
        return {r: scores[r] - accuracy[r] for r in set(scores) & set(accuracy)}

    sum_arm = next((a for a in arms if a.info.reward_source == "prm" and a.info.credit == "sum"
                    and a.info.rm_update == "iterative" and not mixed(a)), None)
    others = [a for a in arms if a.info.reward_source == "prm" and (a.info.credit == "min" or mixed(a))]
    growth = gap_growth(gaps(sum_arm)) if sum_arm else None
    if growth is None or not others:
        return [(f"- S4 (reward hacking): {_verdict(None)}: it needs a process sum arm and a min or mix arm, "
                "with gaps logged for two or more rounds.")]
    lines, closed = [], []
    for arm in others:
        other = gap_growth(gaps(arm))
        closes = other is not None and growth > 0 and other <= (1 - S4_CLOSED_FRACTION) * growth
        closed.append(closes)
        lines.append(f"  - `{arm.info.arm}`: gap growth {number_text(other)} vs `{sum_arm.info.arm}` {growth:+.3f}")
    met = growth > 0 and any(closed)
    key = hacking_curves(sum_arm)[2]
    return [(f"- S4 (reward hacking): {_verdict(met)}. Goal: the sum arm's gap (PRM score - true accuracy of the same "
            f"samples, `{key}`) grows over rounds, and a min or mix arm closes at least {S4_CLOSED_FRACTION:.0%} of "
            "that growth."), *lines]


def findings_section(arms: list[ArmRuns]) -> list[str]:
    """The S1/S2/S4 verdicts, for the top of report.md."""
    traced = s1_lines(arms, "trace_accuracy") if any(arm.finals("trace_accuracy") for arm in arms) else []
    return ["## The questions", "", *s1_lines(arms), *traced, *s2_lines(arms), *s4_lines(arms), ""]
