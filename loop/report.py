"""The process-vs-outcome compare report: writes report.md (and its PNG plots) from each run's metrics.jsonl.

What it reads and the statistics over seeds: loop/report_stats.py. The PNGs are drawn by loop/plots.py, the verdicts
on the study's research questions by loop/findings.py.
"""

from __future__ import annotations

from pathlib import Path

from ..utils.errors import UserError
from ..utils.jsonl import atomic_write_text
from .efficiency import efficiency_section
from .findings import findings_section
from .plots import plot_accuracy, plot_accuracy_vs_tokens, plot_f1, plot_hacking, plot_trace_accuracy
from .report_stats import (
    ArmRuns,
    RunInfo,
    f1_key,
    group_arms,
    hacking_curves,
    mean_ci,
    mixed,
    number_text,
    reach_step,
    reference_arm,
    seed_curve,
)

PLOT_FILES = ("accuracy_vs_rl_step.png", "trace_accuracy_vs_rl_step.png", "prm_f1_per_round.png",
              "prm_score_vs_accuracy.png", "accuracy_vs_tokens.png")
"""The PNGs write_report may write into out_dir (a plot with no data is left out and said so in report.md)."""


# ---- markdown --------------------------------------------------------------------------------------------------


def _ci_text(values: list[float]) -> str:
    mean, half = mean_ci(values)
    if not values:
        return "–"
    return f"{mean:.3f} (n=1, no CI)" if len(values) == 1 else f"{mean:.3f} ± {half:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def settings_section(arms: list[ArmRuns]) -> list[str]:
    """The arms, their settings and seeds."""
    rows = [[a.info.arm, a.info.supervision, a.info.reward_source, a.info.rm_update, a.info.credit,
             ", ".join(map(str, a.seeds))] for a in arms]
    return ["## Arms", "", *_table(["arm", "supervision", "reward source", "RM update", "credit", "seeds"], rows)]


def accuracy_section(arms: list[ArmRuns]) -> list[str]:
    """Final held-out accuracy per arm (mean ± 95% CI over seeds) with the round-0 start accuracy; trace accuracy (every
    step right too) beside it where the task's step verifier measured it."""
    traced = any(arm.finals("trace_accuracy") for arm in arms)
    rows = []
    for arm in arms:
        starts = [curve[0] for curve in arm.per_seed("accuracy") if 0 in curve]
        row = [arm.info.arm, str(len(arm.seeds)), _ci_text(starts), _ci_text(arm.finals()),
               ", ".join(number_text(v) for v in arm.finals())]
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


def steps_section(arms: list[ArmRuns]) -> list[str]:
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


def f1_section(arms: list[ArmRuns]) -> list[str]:
    """PRM first-error F1 per round (rows) and arm (columns), mean ± 95% CI over seeds; on the round's curriculum
    band where that was logged, and on all held-out problems."""
    lines = ["## PRM first-error F1 per round", ""]
    keys = list(dict.fromkeys([f1_key(arms), "prm_first_error_f1"]))
    for key in keys:
        values = {arm.info.arm: arm.round_values(key) for arm in arms}
        rounds = sorted({r for per_round in values.values() for r in per_round})
        if not rounds:
            continue
        where = ("the current round's curriculum band of held-out problems" if key.startswith("band_")
                 else "all held-out problems")
        rows = [[str(r), *(_ci_text(values[name].get(r, [])) for name in values)] for r in rounds]
        lines += [(f"`{key}`: the PRM's first-error F1 on the current policy's samples of {where}, mean ± 95% CI over "
                  "seeds ('–' = not measured)."), "", *_table(["round", *values], rows)]
    if len(lines) == 2:
        return [*lines, "No run logged `prm_first_error_f1`.", ""]
    return [*lines, "![PRM first-error F1 per round](prm_f1_per_round.png)", ""]


def rm_update_section(arms: list[ArmRuns]) -> list[str]:
    """Arms that differ only in rm_update (fixed vs iterative reward model), side by side."""
    groups: dict[tuple[str, str, str], list[ArmRuns]] = {}
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
                         _ci_text(arm.finals()), number_text(mean_ci(f1)[0])])
        by_update = {a.info.rm_update: mean_ci(a.finals())[0] for a in group}
        if {"fixed", "iterative"} <= set(by_update):
            diff = by_update["iterative"] - by_update["fixed"]
            lines.append(f"- {supervision} / {source} / {credit}: iterative − fixed final accuracy = {diff:+.3f}.")
    header = ["shared settings", "arm", "RM update", "final accuracy", "final PRM first-error F1"]
    return [*lines, "", *_table(header, rows)]


def hacking_section(arms: list[ArmRuns]) -> list[str]:
    """PRM mean solution score vs true accuracy per round: a score that rises while accuracy does not is hacking."""
    rows, used = [], set()
    for arm in arms:
        scores, accuracy, key = hacking_curves(arm)
        used.add(key)
        for r in sorted(set(scores) & set(accuracy)):
            rows.append([arm.info.arm, str(r), number_text(scores[r]), number_text(accuracy[r]), f"`{key}`",
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
    arms = group_arms(runs)
    plotted = {name: plot(arms, out_dir / name)
               for name, plot in zip(PLOT_FILES, (plot_accuracy, plot_trace_accuracy, plot_f1, plot_hacking,
                                                  plot_accuracy_vs_tokens))}
    lines = [f"# {title}", "", (f"{len(runs)} runs in {len(arms)} arms; numbers are held-out evaluations "
             "read from each run's metrics.jsonl."), ""]
    for section in (findings_section, settings_section, accuracy_section, steps_section, efficiency_section,
                    f1_section, rm_update_section, hacking_section):
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
