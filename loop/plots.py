"""The compare report's PNG plots: accuracy vs RL step, PRM first-error F1 per round, PRM score vs true accuracy.

matplotlib's object API (``Figure`` + Agg canvas) only, so no global backend or pyplot state is touched; each function
returns whether it drew anything (a plot with no data is not written).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report_stats import ArmRuns, f1_key, hacking_curves, mean_ci, reference_arm, seed_curve, token_totals

LEGEND_OUTSIDE = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
"""Legend to the right of the axes, so many arms never hide the curves."""


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _draw_curves(ax: Any, arms: list[ArmRuns], per_seed: Callable[[ArmRuns], list[dict[int, float]]],
                 label: Callable[[ArmRuns], str]) -> bool:
    """One seed-mean line per arm (band = min..max over seeds when there are several); whether anything was drawn."""
    drawn = False
    for index, arm in enumerate(arms):
        curve = seed_curve(per_seed(arm))
        if not curve:
            continue
        xs, means, lows, highs = zip(*curve)
        ax.plot(xs, means, marker="o", color=f"C{index}", label=label(arm))
        if len(arm.seeds) > 1:
            ax.fill_between(xs, lows, highs, color=f"C{index}", alpha=0.2, linewidth=0)
        drawn = True
    return drawn


def plot_accuracy(arms: list[ArmRuns], path: Path, key: str = "accuracy") -> bool:
    """Seed-mean held-out ``key`` (accuracy or trace_accuracy) vs RL step per arm, band = min..max over seeds; dashed
    line = the outcome arm's final mean."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a report draws
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    drawn = _draw_curves(ax, arms, lambda arm: arm.per_seed(key, "rl_step"),
                         lambda arm: f"{arm.info.arm} (n={len(arm.seeds)})")
    reference = reference_arm(arms)
    if reference is not None and reference.finals(key):
        ax.axhline(mean_ci(reference.finals(key))[0], color="grey", linestyle="--", linewidth=1,
                   label=f"final mean of {reference.info.arm}")
    name = "held-out accuracy" if key == "accuracy" else "held-out trace accuracy (every step right)"
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set(xlabel="RL step", ylabel=name, title=f"{name[0].upper()}{name[1:]} (line: seed mean, band: min–max)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(**LEGEND_OUTSIDE)
        _save(fig, path)
    return drawn


def plot_trace_accuracy(arms: list[ArmRuns], path: Path) -> bool:
    """``plot_accuracy`` of trace accuracy (tasks with a step verifier only; nothing drawn elsewhere)."""
    return plot_accuracy(arms, path, "trace_accuracy")


def plot_f1(arms: list[ArmRuns], path: Path) -> bool:
    """Seed-mean PRM first-error F1 per round per arm, band = min..max over seeds."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a report draws
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    key = f1_key(arms)
    drawn = _draw_curves(ax, arms, lambda arm: arm.per_seed(key), lambda arm: arm.info.arm)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    where = " on the round's curriculum band" if key.startswith("band_") else ""
    ax.set(xlabel="round", ylabel="first-error F1",
           title=f"PRM first-error F1{where} (line: seed mean, band: min–max)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(**LEGEND_OUTSIDE)
        _save(fig, path)
    return drawn


def plot_hacking(arms: list[ArmRuns], path: Path) -> bool:
    """One panel per arm with PRM scores: seed-mean PRM solution score and true accuracy per round."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a report draws
    from matplotlib.ticker import MaxNLocator

    panels = [(i, arm, *hacking_curves(arm)) for i, arm in enumerate(arms)]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return False
    fig = Figure(figsize=(max(6.0, 4.0 * len(panels)), 4.2))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (index, arm, scores, accuracy, key) in zip(axes, panels):
        ax.plot(list(scores), list(scores.values()), marker="o", color=f"C{index}", label="PRM mean score")
        ax.plot(list(accuracy), list(accuracy.values()), marker="s", linestyle="--", color="black",
                label=f"true accuracy ({key})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="round", title=arm.info.arm, ylim=(0, 1.05))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("seed mean")
    fig.suptitle("Reward hacking check: PRM score vs true accuracy", fontsize=11)
    _save(fig, path)
    return True


def plot_accuracy_vs_tokens(arms: list[ArmRuns], path: Path) -> bool:
    """Seed-mean held-out accuracy against seed-mean total tokens (GRPO + reward-model data and training) at each
    evaluation every seed made: the compute-matched view of the accuracy curves."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a report draws

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    drawn = False
    for index, arm in enumerate(arms):
        tokens = [token_totals(evals, rl) for evals, rl in zip(arm.evals, arm.rl)]
        accuracy = arm.per_seed("accuracy", "rl_step")
        steps = sorted(set.intersection(*(set(t) & set(a) for t, a in zip(tokens, accuracy)))) if tokens else []
        if not steps:
            continue
        xs = [mean_ci([t[s] for t in tokens])[0] for s in steps]
        ys = [mean_ci([a[s] for a in accuracy])[0] for s in steps]
        ax.plot(xs, ys, marker="o", color=f"C{index}", label=arm.info.arm)
        drawn = True
    ax.set(xlabel="total tokens (GRPO + reward-model labelling and training)", ylabel="held-out accuracy",
           title="Accuracy at equal compute (seed means)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(**LEGEND_OUTSIDE)
        _save(fig, path)
    return drawn
