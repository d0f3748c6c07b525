"""S3, sample efficiency and compute: RL steps and total tokens each arm needs to reach the outcome arm's final
accuracy, and every arm's accuracy at the outcome arm's token budget, with 95% CIs over seeds.

RL steps alone flatter process supervision: its reward model was built from extra samples (labelling) and extra
training. So tokens count everything an arm spent (loop/orchestrator.py): GRPO's prompt + completion tokens, the
labelling samples, Monte Carlo rollouts and reward-model training tokens, the shared first reward model included.
They are unweighted token counts (a generated token, a scored token and a trained-on token count the same), the
simplest compute proxy that does not favour either side's phase. Statistics: loop/report_stats.py.
"""

from __future__ import annotations

import math

from .report_stats import (
    ArmRuns,
    by_step,
    ci_text,
    mean_ci,
    mixed,
    number_text,
    reference_arm,
    steps_to_reach,
    token_totals,
)


def seed_reach(arm: ArmRuns, target: float, key: str = "accuracy") -> list[tuple[int, float | None] | None]:
    """Per seed, (rl_step, total tokens there or None) of the first evaluation whose ``key`` is >= ``target``, or
    None when that seed never reached it."""
    reached = []
    for evals, rl in zip(arm.evals, arm.rl or [[] for _ in arm.evals]):
        curve = by_step(evals, key)
        step = steps_to_reach(list(curve), list(curve.values()), target)
        reached.append(None if step is None else (step, token_totals(evals, rl).get(step)))
    return reached


def accuracy_at_budget(arm: ArmRuns, budget: float, key: str = "accuracy") -> list[float]:
    """Per seed, ``key`` at the seed's last evaluation whose total tokens are within ``budget`` (seeds with no such
    evaluation are left out)."""
    values = []
    for evals, rl in zip(arm.evals, arm.rl or [[] for _ in arm.evals]):
        tokens, curve = token_totals(evals, rl), by_step(evals, key)
        within = [step for step, total in tokens.items() if total <= budget and step in curve]
        if within:
            values.append(curve[max(within)])
    return values


def _mean_text(values: list[float], digits: int = 0) -> str:
    mean, half = mean_ci(values)
    if not values:
        return "–"
    value = f"{mean:,.{digits}f}"
    return value if not math.isfinite(half) else f"{value} ± {half:,.{digits}f}"


def efficiency_section(arms: list[ArmRuns], key: str = "accuracy") -> list[str]:
    """The S3 table and its reading: RL steps and tokens to reach the outcome arm's final ``key``, ``key`` at the
    outcome arm's token budget."""
    lines = ["## Sample efficiency and compute", ""]
    reference = reference_arm(arms)
    if reference is None or not reference.finals(key):
        return [*lines, "No arm uses outcome supervision, so there is no reference to reach.", ""]
    target = mean_ci(reference.finals(key))[0]
    budgets = [totals[max(totals)] for totals in (token_totals(e, r) for e, r in zip(reference.evals, reference.rl))
               if totals]
    budget = mean_ci(budgets)[0] if budgets else math.nan
    rows = []
    for arm in arms:
        reached = seed_reach(arm, target, key)
        hits = [r for r in reached if r is not None]
        steps = [float(step) for step, _ in hits]
        tokens = [total for _, total in hits if total is not None]
        at_budget = accuracy_at_budget(arm, budget, key) if math.isfinite(budget) else []
        difference = (ci_text(*mean_ci([a - b for a, b in zip(at_budget, accuracy_at_budget(reference, budget, key))]))
                      if arm is not reference and len(at_budget) == len(reference.seeds) else "–")
        rows.append([arm.info.arm + (" (outcome mix)" if mixed(arm) else ""), f"{len(hits)}/{len(reached)}",
                     _mean_text(steps, 1), _mean_text(tokens), _mean_text(at_budget, 3), difference])
    header = ["arm", "seeds that reach it", "RL steps to reach", "total tokens to reach",
              f"{key} at the outcome arm's budget", "difference vs outcome"]
    text = (f"Target: `{reference.info.arm}`'s final seed-mean {key.replace('_', ' ')}, {number_text(target)}. Each "
            "seed's first evaluation at or above it; mean ± 95% CI over the seeds that reach it. Total tokens = GRPO's "
            "prompt + completion tokens + every token spent on reward-model data and training (labelling samples, "
            "Monte Carlo rollouts, reward-model training, the shared first reward model included). Budget: the "
            f"outcome arm's final total, {budget:,.0f} tokens; each arm's {key.replace('_', ' ')} at its last "
            "evaluation within it, and the paired difference (seed k vs the outcome arm's seed k).")
    return [*lines, text, "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]
