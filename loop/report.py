"""The process-vs-outcome compare report: reads each run's metrics.jsonl, writes report.md and PNG plots.

What it reads: the ``kind == "eval"`` rows of ``run_dir/metrics.jsonl`` (see loop/tracking.py), keys ``accuracy``,
``prm_first_error_f1``, ``prm_score_mean`` and ``sample_accuracy``; a null or missing value is "not measured". Eval rows
with the same (round, rl_step) are merged, later values winning (a resumed run may log a row twice, and an evaluation
may be split over calls). A round's value is the last measurement in that round.
Statistics: over seeds, mean ± 95% CI half width = t_{0.975, n-1} · s / sqrt(n) with the sample std s (ddof 1); one
seed has no CI. Curves over seeds use only the points (rl_step or round) that every seed of the arm logged.
The PNGs are drawn by loop/plots.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.jsonl import atomic_write_text, read_jsonl_tolerant

T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)
"""t_{0.975, df} for df = 1..30 (two-sided 95%); 1.96 beyond, used when scipy is not installed."""

REACH_TOLERANCE = 1e-9
"""A seed-mean accuracy within this of the target counts as reaching it (float noise in means)."""

PLOT_FILES = ("accuracy_vs_rl_step.png", "trace_accuracy_vs_rl_step.png", "prm_f1_per_round.png",
              "prm_score_vs_accuracy.png")
"""The PNGs write_report may write into out_dir (a plot with no data is left out and said so in report.md)."""


@dataclass(frozen=True)
class RunInfo:
    """One arm-and-seed run to compare."""

    arm: str
    """Arm name, e.g. "process-prm-iterative-sum"; runs with equal names are seeds of one arm."""
    seed: int
    """The run's seed."""
    supervision: str
    """"process" or "outcome"; the first "outcome" arm is the reference for steps-to-reach."""
    reward_source: str
    """Where rewards come from, e.g. "prm", "answer", "orm"."""
    rm_update: str
    """"fixed" or "iterative" reward model."""
    credit: str
    """Credit assignment, e.g. "sum" or "min"."""
    run_dir: Path
    """Directory holding the run's metrics.jsonl."""


# ---- pure statistics -------------------------------------------------------------------------------------------


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: scipy's value when scipy is installed, else the table T_975 (1.96 for df > 30)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return T_975[df - 1] if df <= len(T_975) else 1.96
    return float(student_t.ppf(0.975, df))


def sample_variance(values: list[float]) -> float:
    """Sample variance (ddof 1) of two or more values."""
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, 95% CI half width) over ``values`` with the t-distribution; half width is nan for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, t_quantile_975(n - 1) * math.sqrt(sample_variance(values)) / math.sqrt(n)


def steps_to_reach(steps: list[int], values: list[float], target: float) -> int | None:
    """The first step (in the given order) whose value is >= ``target`` (within REACH_TOLERANCE), else None."""
    for step, value in zip(steps, values):
        if value >= target - REACH_TOLERANCE:
            return step
    return None


def seed_curve(per_seed: list[dict[int, float]]) -> list[tuple[int, float, float, float]]:
    """(x, mean, min, max) over seeds at each x that every seed has, sorted by x."""
    if not per_seed:
        return []
    common = set.intersection(*(set(curve) for curve in per_seed))
    points = []
    for x in sorted(common):
        values = [curve[x] for curve in per_seed]
        points.append((x, sum(values) / len(values), min(values), max(values)))
    return points


# ---- reading runs ----------------------------------------------------------------------------------------------


def load_eval_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The eval rows of ``run_dir/metrics.jsonl`` merged per (round, rl_step) (later values win), sorted by that key."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no such file (is {run_dir} a finished run directory?)")
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for row in read_jsonl_tolerant(path):
        if row.get("kind") == "eval":
            latest.setdefault((int(row["round"]), int(row["rl_step"])), {}).update(row)
    return [latest[key] for key in sorted(latest)]


def _measured(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def by_step(rows: list[dict[str, Any]], key: str) -> dict[int, float]:
    """rl_step -> value of ``key`` (rows already sorted; later rows win)."""
    return {int(r["rl_step"]): v for r in rows if (v := _measured(r, key)) is not None}


def by_round(rows: list[dict[str, Any]], key: str) -> dict[int, float]:
    """round -> value of ``key`` in the round's last eval row that measured it."""
    return {int(r["round"]): v for r in rows if (v := _measured(r, key)) is not None}


@dataclass
class Arm:
    """All seeds of one arm and their eval rows."""

    info: RunInfo
    """The arm's first run (settings are equal across its seeds)."""
    seeds: list[int]
    """Seeds in the order given."""
    evals: list[list[dict[str, Any]]]
    """Per seed, the eval rows from load_eval_rows."""

    def per_seed(self, key: str, x: str = "round") -> list[dict[int, float]]:
        """Per seed, x (``"round"`` or ``"rl_step"``) -> value of ``key``."""
        pick = by_round if x == "round" else by_step
        return [pick(rows, key) for rows in self.evals]

    def finals(self, key: str = "accuracy") -> list[float]:
        """Per seed, the last measured value of ``key`` (seeds that never measured it are left out)."""
        return [list(curve.values())[-1] for curve in self.per_seed(key, "rl_step") if curve]


def group_arms(runs: list[RunInfo]) -> list[Arm]:
    """Runs grouped into arms in order of first appearance; seeds of one arm must share its settings."""
    arms: dict[str, Arm] = {}
    for run in runs:
        arm = arms.setdefault(run.arm, Arm(info=run, seeds=[], evals=[]))
        settings = ("supervision", "reward_source", "rm_update", "credit")
        if any(getattr(run, name) != getattr(arm.info, name) for name in settings):
            raise UserError(f"arm {run.arm!r}: seed {run.seed} has settings that differ from seed {arm.info.seed}")
        arm.seeds.append(run.seed)
        arm.evals.append(load_eval_rows(run.run_dir))
    return list(arms.values())


# ---- markdown --------------------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _ci_text(values: list[float]) -> str:
    mean, half = mean_ci(values)
    if not values:
        return "–"
    return f"{mean:.3f} (n=1, no CI)" if len(values) == 1 else f"{mean:.3f} ± {half:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def settings_section(arms: list[Arm]) -> list[str]:
    """The arms, their settings and seeds."""
    rows = [[a.info.arm, a.info.supervision, a.info.reward_source, a.info.rm_update, a.info.credit,
             ", ".join(map(str, a.seeds))] for a in arms]
    return ["## Arms", "", *_table(["arm", "supervision", "reward source", "RM update", "credit", "seeds"], rows)]


def accuracy_section(arms: list[Arm]) -> list[str]:
    """Final held-out accuracy per arm (mean ± 95% CI over seeds) with the round-0 start accuracy; trace accuracy (every
    step right too) beside it where the task's step verifier measured it."""
    traced = any(arm.finals("trace_accuracy") for arm in arms)
    rows = []
    for arm in arms:
        starts = [curve[0] for curve in arm.per_seed("accuracy") if 0 in curve]
        row = [arm.info.arm, str(len(arm.seeds)), _ci_text(starts), _ci_text(arm.finals()),
               ", ".join(_num(v) for v in arm.finals())]
        if traced:
            trace_starts = [curve[0] for curve in arm.per_seed("trace_accuracy") if 0 in curve]
            row += [_ci_text(trace_starts), _ci_text(arm.finals("trace_accuracy"))]
        rows.append(row)
    header = ["arm", "seeds", "start accuracy", "final accuracy", "final per seed"]
    note = ("Trace accuracy: the answer is right and the exact step verifier finds no wrong step (right answers "
            "reached through wrong steps do not count). ") if traced else ""
    return ["## Final held-out accuracy", "",
            ("Mean ± 95% CI half width over seeds (t-distribution, sample std, df = seeds − 1). "
             f"Start = the round-0 evaluation, before any RL step. {note}").rstrip(), "",
            *_table(header + (["start trace accuracy", "final trace accuracy"] if traced else []), rows),
            "![held-out accuracy vs RL step](accuracy_vs_rl_step.png)", "",
            *(["![held-out trace accuracy vs RL step](trace_accuracy_vs_rl_step.png)", ""] if traced else [])]


def reference_arm(arms: list[Arm]) -> Arm | None:
    """The first arm with outcome supervision, or None."""
    return next((arm for arm in arms if arm.info.supervision == "outcome"), None)


def reach_step(arm: Arm, target: float, key: str = "accuracy") -> int | None:
    """The first rl_step at which ``arm``'s seed-mean held-out ``key`` reaches ``target``, or None."""
    curve = seed_curve(arm.per_seed(key, "rl_step"))
    return steps_to_reach([p[0] for p in curve], [p[1] for p in curve], target)


def steps_section(arms: list[Arm]) -> list[str]:
    """RL steps each arm needs for its seed-mean accuracy to reach the outcome arm's final mean accuracy."""
    lines = ["## RL steps to reach the outcome arm's final accuracy", ""]
    reference = reference_arm(arms)
    if reference is None or not reference.finals():
        return [*lines, "No arm uses outcome supervision (with a measured accuracy), so this comparison is skipped.", ""]
    target = mean_ci(reference.finals())[0]
    rows = []
    for arm in arms:
        curve = seed_curve(arm.per_seed("accuracy", "rl_step"))
        step = reach_step(arm, target)
        last_step = str(curve[-1][0]) if curve else "–"
        rows.append([arm.info.arm, "not reached" if step is None else str(step), last_step])
    sentence = (f"Target: the final mean accuracy of the outcome arm `{reference.info.arm}`, {target:.3f}. "
                "Step = first rl_step at which the arm's seed-mean held-out accuracy is at least that.")
    return [*lines, sentence, "", *_table(["arm", "RL steps to reach", "last evaluated step"], rows)]


def f1_section(arms: list[Arm]) -> list[str]:
    """PRM first-error F1 per round (rows) and arm (columns), seed means."""
    curves = {arm.info.arm: {p[0]: p[1] for p in seed_curve(arm.per_seed("prm_first_error_f1"))} for arm in arms}
    rounds = sorted({r for curve in curves.values() for r in curve})
    lines = ["## PRM first-error F1 per round", ""]
    if not rounds:
        return [*lines, "No run logged `prm_first_error_f1`.", ""]
    rows = [[str(r), *(_num(curves[name].get(r)) for name in curves)] for r in rounds]
    return [*lines, "Seed mean of the PRM's first-error F1 on held-out policy samples ('–' = not measured).", "",
            *_table(["round", *curves], rows), "![PRM first-error F1 per round](prm_f1_per_round.png)", ""]


def mixed(arm: Arm) -> bool:
    """Whether the arm adds the outcome advantage ('-mix'; RunInfo knows it only by the arm's name)."""
    return arm.info.arm.endswith("-mix")


def rm_update_section(arms: list[Arm]) -> list[str]:
    """Arms that differ only in rm_update (fixed vs iterative reward model), side by side."""
    groups: dict[tuple[str, str, str], list[Arm]] = {}
    for arm in arms:
        credit = f"{arm.info.credit} + outcome mix" if mixed(arm) else arm.info.credit
        groups.setdefault((arm.info.supervision, arm.info.reward_source, credit), []).append(arm)
    pairs = {key: group for key, group in groups.items() if len({a.info.rm_update for a in group}) > 1}
    lines = ["## Fixed vs iterative reward model", ""]
    if not pairs:
        return [*lines, "No two arms differ only in `rm_update`, so there is nothing to compare here.", ""]
    rows = []
    for (supervision, source, credit), group in pairs.items():
        for arm in group:
            f1 = [c[max(c)] for c in arm.per_seed("prm_first_error_f1") if c]
            rows.append([f"{supervision} / {source} / {credit}", arm.info.arm, arm.info.rm_update,
                         _ci_text(arm.finals()), _num(mean_ci(f1)[0])])
        by_update = {a.info.rm_update: mean_ci(a.finals())[0] for a in group}
        if {"fixed", "iterative"} <= set(by_update):
            diff = by_update["iterative"] - by_update["fixed"]
            lines.append(f"- {supervision} / {source} / {credit}: iterative − fixed final accuracy = {diff:+.3f}.")
    header = ["shared settings", "arm", "RM update", "final accuracy", "final PRM first-error F1"]
    return [*lines, "", *_table(header, rows)]


def hacking_curves(arm: Arm) -> tuple[dict[int, float], dict[int, float], str]:
    """Per round seed means of the PRM mean solution score and of the accuracy it should track, and that key.

    The accuracy is, of the keys the arm logged, the first of: ``sample_trace_accuracy`` (the sampled solutions the PRM
    scored, right in answer and every step; tasks with a step verifier), ``sample_accuracy`` (the same solutions, by
    the answer alone) and the greedy held-out ``accuracy``.
    """
    scores = {p[0]: p[1] for p in seed_curve(arm.per_seed("prm_score_mean"))}
    logged = [k for k in ("sample_trace_accuracy", "sample_accuracy") if seed_curve(arm.per_seed(k))]
    key = logged[0] if logged else "accuracy"
    return scores, {p[0]: p[1] for p in seed_curve(arm.per_seed(key))}, key


def hacking_section(arms: list[Arm]) -> list[str]:
    """PRM mean solution score vs true accuracy per round: a score that rises while accuracy does not is hacking."""
    rows, used = [], set()
    for arm in arms:
        scores, accuracy, key = hacking_curves(arm)
        used.add(key)
        for r in sorted(set(scores) & set(accuracy)):
            rows.append([arm.info.arm, str(r), _num(scores[r]), _num(accuracy[r]), f"`{key}`",
                         f"{scores[r] - accuracy[r]:+.3f}"])
    lines = ["## Reward hacking: PRM score vs true accuracy", ""]
    if not rows:
        return [*lines, "No run logged both `prm_score_mean` and an accuracy.", ""]
    meaning = {"sample_trace_accuracy": "`sample_trace_accuracy`: answer and every step right",
               "sample_accuracy": "`sample_accuracy`: the answer right",
               "accuracy": "greedy `accuracy`, where the samples' accuracy was not logged"}
    text = ("Seed means per round. Gap = PRM mean solution score − true accuracy of the solutions it scored ("
            + "; ".join(meaning[key] for key in meaning if key in used) + "). A gap that grows over rounds means the "
            "policy is learning to please the PRM rather than to be right.")
    return [*lines, text, "", *_table(["arm", "round", "PRM mean score", "accuracy", "accuracy of", "gap"], rows),
            "![PRM score vs accuracy](prm_score_vs_accuracy.png)", ""]


# ---- entry point -----------------------------------------------------------------------------------------------


def write_report(out_dir: str | Path, runs: list[RunInfo], title: str) -> Path:
    """Write ``out_dir/report.md`` and its PNGs comparing ``runs``; returns the report path."""
    if not runs:
        raise UserError("report: no runs to compare")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .plots import plot_accuracy, plot_f1, plot_hacking, plot_trace_accuracy
    from .questions import questions_section

    arms = group_arms(runs)
    plotted = {name: plot(arms, out_dir / name)
               for name, plot in zip(PLOT_FILES, (plot_accuracy, plot_trace_accuracy, plot_f1, plot_hacking))}
    lines = [f"# {title}", "", (f"{len(runs)} runs in {len(arms)} arms; numbers are held-out evaluations "
             "read from each run's metrics.jsonl."), ""]
    for section in (questions_section, settings_section, accuracy_section, steps_section, f1_section, rm_update_section,
                    hacking_section):
        lines += section(arms)
    text = "\n".join(line for line in lines if not _missing_plot(line, plotted))
    path = out_dir / "report.md"
    atomic_write_text(path, text.rstrip("\n") + "\n")
    return path


HEADLINE = ("The questions", "Final held-out accuracy")
"""The report sections `compare`/`demo` print when they finish."""


def report_sections(text: str, titles: tuple[str, ...]) -> str:
    """The '## ' sections of a report.md text whose titles are in ``titles``, in file order."""
    keep, lines = False, []
    for line in text.splitlines():
        if line.startswith("## "):
            keep = line[3:] in titles
        if keep and not line.startswith("!["):  # plots are files; the terminal shows their text only
            lines.append(line)
    return "\n".join(lines).strip()


def _missing_plot(line: str, plotted: dict[str, bool]) -> bool:
    return line.startswith("![") and any(f"({name})" in line and not done for name, done in plotted.items())
