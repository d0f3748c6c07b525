"""The compare report's numbers: runs read from metrics.jsonl, grouped into arms, and the statistics over seeds.

What it reads: the ``kind == "eval"`` rows of ``run_dir/metrics.jsonl`` (see loop/tracking.py), keys ``accuracy``,
``prm_first_error_f1``, ``prm_score_mean`` and ``sample_accuracy``; a null or missing value is "not measured". Eval rows
with the same (round, rl_step) are merged, later values winning (a resumed run may log a row twice, and an evaluation
may be split over calls). A round's value is the last measurement in that round.
Statistics: over seeds, mean ± 95% CI half width = t_{0.975, n-1} · s / sqrt(n) with the sample std s (ddof 1); one
seed has no CI. Curves over seeds use only the points (rl_step or round) that every seed of the arm logged.
loop/report.py (markdown), loop/plots.py (PNGs) and loop/findings.py (the S1/S2/S4 verdicts) read these.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.jsonl import read_jsonl_tolerant

T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)
"""t_{0.975, df} for df = 1..30 (two-sided 95%); 1.96 beyond, used when scipy is not installed."""

REACH_TOLERANCE = 1e-9
"""A seed-mean accuracy within this of the target counts as reaching it (float noise in means)."""

@dataclass(frozen=True)
class RunInfo:
    """One arm-and-seed run to compare."""

    arm: str
    """ArmRuns name, e.g. "process-prm-iterative-sum"; runs with equal names are seeds of one arm."""
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
        from scipy.stats import t as student_t  # lazy: optional dependency (the table T_975 without it)
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


def load_eval_rows(run_dir: Path, kind: str = "eval") -> list[dict[str, Any]]:
    """The ``kind`` rows ("eval" or "rl") of ``run_dir/metrics.jsonl`` merged per (round, rl_step) (later values
    win), sorted by that key."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no such file (is {run_dir} a finished run directory?)")
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for row in read_jsonl_tolerant(path):
        if row.get("kind") == kind:
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
class ArmRuns:
    """All seeds of one arm and their eval rows."""

    info: RunInfo
    """The arm's first run (settings are equal across its seeds)."""
    seeds: list[int]
    """Seeds in the order given."""
    evals: list[list[dict[str, Any]]]
    """Per seed, the eval rows from load_eval_rows."""
    rl: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
    """Per seed, the RL-step rows (``load_eval_rows(run_dir, "rl")``): training reward, steps per completion, tokens."""

    def per_seed(self, key: str, x: str = "round") -> list[dict[int, float]]:
        """Per seed, x (``"round"`` or ``"rl_step"``) -> value of ``key``."""
        pick = by_round if x == "round" else by_step
        return [pick(rows, key) for rows in self.evals]

    def per_seed_rl(self, key: str) -> list[dict[int, float]]:
        """Per seed, rl_step -> value of ``key`` in the RL-step rows."""
        return [by_step(rows, key) for rows in self.rl]

    def round_values(self, key: str) -> dict[int, list[float]]:
        """round -> the seeds' values of ``key`` (only rounds every seed measured)."""
        curves = self.per_seed(key)
        common = set.intersection(*(set(c) for c in curves)) if curves else set()
        return {r: [c[r] for c in curves] for r in sorted(common)}

    def finals(self, key: str = "accuracy") -> list[float]:
        """Per seed, the last measured value of ``key`` (seeds that never measured it are left out)."""
        return [list(curve.values())[-1] for curve in self.per_seed(key, "rl_step") if curve]


def group_arms(runs: list[RunInfo]) -> list[ArmRuns]:
    """Runs grouped into arms in order of first appearance; seeds of one arm must share its settings."""
    arms: dict[str, ArmRuns] = {}
    for run in runs:
        arm = arms.setdefault(run.arm, ArmRuns(info=run, seeds=[], evals=[]))
        settings = ("supervision", "reward_source", "rm_update", "credit")
        if any(getattr(run, name) != getattr(arm.info, name) for name in settings):
            raise UserError(f"arm {run.arm!r}: seed {run.seed} has settings that differ from seed {arm.info.seed}")
        arm.seeds.append(run.seed)
        arm.evals.append(load_eval_rows(run.run_dir))
        arm.rl.append(load_eval_rows(run.run_dir, "rl"))
    return list(arms.values())



# ---- arms ------------------------------------------------------------------------------------------------------


def reference_arm(arms: list[ArmRuns]) -> ArmRuns | None:
    """The first arm with outcome supervision, or None."""
    return next((arm for arm in arms if arm.info.supervision == "outcome"), None)


def reach_step(arm: ArmRuns, target: float, key: str = "accuracy") -> int | None:
    """The first rl_step at which ``arm``'s seed-mean held-out ``key`` reaches ``target``, or None."""
    curve = seed_curve(arm.per_seed(key, "rl_step"))
    return steps_to_reach([p[0] for p in curve], [p[1] for p in curve], target)


def mixed(arm: ArmRuns) -> bool:
    """Whether the arm adds the outcome advantage ('-mix'; RunInfo knows it only by the arm's name)."""
    return arm.info.arm.endswith("-mix")


def hacking_curves(arm: ArmRuns) -> tuple[dict[int, float], dict[int, float], str]:
    """Per round seed means of the PRM mean solution score and of the accuracy it should track, and that key.

    The accuracy is, of the keys the arm logged, the first of: ``sample_trace_accuracy`` (the sampled solutions the PRM
    scored, right in answer and every step; tasks with a step verifier), ``sample_accuracy`` (the same solutions, by
    the answer alone) and the greedy held-out ``accuracy``.
    """
    scores = {p[0]: p[1] for p in seed_curve(arm.per_seed("prm_score_mean"))}
    logged = [k for k in ("sample_trace_accuracy", "sample_accuracy") if seed_curve(arm.per_seed(k))]
    key = logged[0] if logged else "accuracy"
    return scores, {p[0]: p[1] for p in seed_curve(arm.per_seed(key))}, key


def number_text(value: float | None) -> str:
    """A value as report text: 3 decimals, or '–' when not measured."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def paired_change(values_from: list[float], values_to: list[float]) -> tuple[float, float]:
    """Mean ± 95% CI half width of the per-seed change ``to - from`` (seeds paired in order)."""
    return mean_ci([b - a for a, b in zip(values_from, values_to)])


def ci_excludes_zero(mean: float, half: float) -> int:
    """+1 when the 95% CI lies above 0, -1 below, 0 when it contains 0 or is not measured."""
    if not math.isfinite(mean) or not math.isfinite(half):
        return 0
    return 1 if mean - half > 0 else (-1 if mean + half < 0 else 0)


def ci_text(mean: float, half: float) -> str:
    """'+0.012 ± 0.034' (a signed mean and its CI half width), '+0.012 (no CI)' with one seed, '–' when unmeasured."""
    if not math.isfinite(mean):
        return "–"
    return f"{mean:+.3f} ± {half:.3f}" if math.isfinite(half) else f"{mean:+.3f} (no CI)"


def token_totals(evals: list[dict[str, Any]], rl: list[dict[str, Any]]) -> dict[int, float]:
    """One seed's total tokens at each accuracy evaluation: rl_step -> GRPO's prompt + completion tokens so far
    (``num_tokens`` of the RL row at that step; 0 at step 0) + the reward-model tokens its round had spent
    (``tokens_reward_model`` of the round's evaluation; a round spends them before its first RL step)."""
    spent = by_round(evals, "tokens_reward_model")
    rl_tokens = by_step(rl, "num_tokens")
    totals = {}
    for row in evals:
        step, round_index = int(row["rl_step"]), int(row["round"])
        if _measured(row, "accuracy") is None or round_index not in spent:
            continue
        if step == 0 or step in rl_tokens:
            totals[step] = rl_tokens.get(step, 0.0) + spent[round_index]
    return totals


def f1_key(arms: list[ArmRuns]) -> str:
    """The PRM F1 that S2 and the F1 plot read: on the current curriculum band's held-out problems where logged
    (``loop.curriculum``), else on all of them."""
    banded = any(curve for arm in arms for curve in arm.per_seed("band_prm_first_error_f1"))
    return "band_prm_first_error_f1" if banded else "prm_first_error_f1"


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
