"""Tests for loop/findings.py: the S1/S2/S4 verdicts, with hand-computed numbers."""

import math
from pathlib import Path

import pytest
from test_report import OUTCOME, PROCESS, fake_run

from prmloop.loop.findings import difference_ci, findings_section, step_ratio
from prmloop.loop.report_stats import RunInfo, group_arms
from prmloop.utils.jsonl import append_jsonl


def test_difference_ci_hand_values():
    # a = [0.5, 0.7]: mean 0.6, var 0.02; b = [0.2, 0.4]: mean 0.3, var 0.02
    # se = sqrt(0.02/2 + 0.02/2) = sqrt(0.02) = 0.1414214; t_{0.975, 1} = 12.7062 -> half 1.796928
    diff, half = difference_ci([0.5, 0.7], [0.2, 0.4])
    assert diff == pytest.approx(0.3) and half == pytest.approx(1.796928, abs=1e-5)
    assert math.isnan(difference_ci([0.5], [0.2, 0.4])[1]) and difference_ci([0.5], [0.2, 0.4])[0] == pytest.approx(0.2)
    assert math.isnan(difference_ci([], [0.1])[0])


def test_step_ratio():
    assert step_ratio(7, 10) == pytest.approx(0.7)
    assert step_ratio(None, 10) is None and step_ratio(5, None) is None


def runs_for(tmp_path: Path) -> list[RunInfo]:
    fixed = {**PROCESS, "rm_update": "fixed"}
    minimum = {**PROCESS, "credit": "min"}
    return [
        # outcome: seed means [0.2, 0.4, 0.6] at steps 0, 10, 20 -> its final 0.6 is reached at step 20
        RunInfo("outcome", s, run_dir=fake_run(tmp_path / f"o{s}", [0.2, 0.4, 0.6], None, None), **OUTCOME)
        for s in (0, 1)
    ] + [
        # process iterative reaches 0.6 at step 10 -> 0.5x; F1 0.9, 0.85 in rounds 1, 2; scores give gaps
        # round 0..2: 0.3-0.2, 0.8-0.6, 1.0-0.7 = +0.1, +0.2, +0.3 -> growth +0.2
        RunInfo("process-prm-iterative", s, run_dir=fake_run(tmp_path / f"i{s}", [0.2, 0.6, 0.7], [0.9, 0.9, 0.85],
                                                              [0.3, 0.8, 1.0]), **PROCESS) for s in (0, 1)
    ] + [
        # process fixed: F1 0.8 -> 0.6 (decays), final 0.5
        RunInfo("process-prm-fixed", s, run_dir=fake_run(tmp_path / f"f{s}", [0.2, 0.3, 0.5], [0.9, 0.8, 0.6], None),
                **fixed) for s in (0, 1)
    ] + [
        # min credit: gaps +0.1, +0.1, +0.15 -> growth +0.05 <= half of +0.2
        RunInfo("process-prm-iterative-min", 0, run_dir=fake_run(tmp_path / "m0", [0.2, 0.4, 0.5], None,
                                                                  [0.3, 0.5, 0.65]), **minimum),
    ]


def test_questions_met(tmp_path: Path):
    text = "\n".join(findings_section(group_arms(runs_for(tmp_path))))
    assert "S1 (process vs outcome): **met**" in text
    assert "`process-prm-iterative`: reaches it at 0.50x the steps" in text
    assert "`process-prm-fixed`: never reaches it" in text
    # finals [0.7, 0.7] vs [0.6, 0.6]: zero spread, so the half width is 0
    assert "difference +0.100 ± 0.000" in text
    # S2, sum credit: finals [0.7, 0.7] vs [0.5, 0.5] -> +0.200, zero spread -> ± 0.000, above 0: met
    assert "S2 (iterative vs fixed PRM, sum credit): **met**" in text
    assert ("r1 0.900 ± 0.000 vs 0.800 ± 0.000 (difference +0.100 ± 0.000); r2 0.850 ± 0.000 vs 0.600 ± 0.000 "
            "(difference +0.250 ± 0.000)") in text
    assert "fixed PRM's F1 r1 -> r2: -0.200 ± 0.000 (paired over seeds)" in text
    assert "final accuracy iterative − fixed: +0.200 ± 0.000 (95% CI)" in text
    # S4, iterative sum: score 0.3 -> 1.0 (+0.7), accuracy 0.2 -> 0.7 (+0.5), gap 0.1 -> 0.3 (+0.2): overrated
    assert ("`process-prm-iterative`: overrated, not hacked: the gap grew, but true accuracy did not fall. Held-out "
            "PRM score +0.700 ± 0.000, true accuracy +0.500 ± 0.000, gap +0.200 ± 0.000") in text
    assert "`process-prm-fixed`: not measured" in text  # it logged no PRM score
    # the min arm (one seed): gap 0.1 -> 0.15 = +0.05, no CI
    assert "iterative PRM, sum vs min credit: gap change +0.200 ± 0.000 vs +0.050 (no CI)" in text
    assert "Steps per completion were not logged" in text


def test_questions_not_met_and_not_measured(tmp_path: Path):
    runs = runs_for(tmp_path)
    # the process arm alone, with an outcome arm it never catches: S1 not met; S2, S4 lack their arms
    only = [r for r in runs if r.arm in ("outcome", "process-prm-fixed")]
    text = "\n".join(findings_section(group_arms(only)))
    assert "S1 (process vs outcome): **not met**" in text
    assert "S2 (iterative vs fixed PRM): **not measured**" in text
    assert "`process-prm-fixed`: not measured" in text  # S4 for the one process arm: no PRM score logged


def test_s1_is_not_measured_when_the_outcome_arm_never_improves(tmp_path: Path):
    runs = [RunInfo("outcome", 0, run_dir=fake_run(tmp_path / "o", [0.3, 0.25, 0.2], None, None), **OUTCOME),
            RunInfo("process", 0, run_dir=fake_run(tmp_path / "p", [0.3, 0.4, 0.35], None, None), **PROCESS)]
    text = "\n".join(findings_section(group_arms(runs)))
    # target 0.2 is reached by every arm at step 0: no steps to compare, the final accuracies still shown
    assert "S1 (process vs outcome): **not measured**" in text and "ended no better than its start" in text
    assert "`process`: no steps to compare; final accuracy 0.350 vs 0.200, difference +0.150" in text


def test_s1_by_trace_accuracy_appears_where_trace_accuracy_was_logged(tmp_path: Path):
    from prmloop.utils.jsonl import append_jsonl

    runs = [RunInfo("outcome", 0, run_dir=fake_run(tmp_path / "o", [0.3, 0.4, 0.5], None, None), **OUTCOME),
            RunInfo("process", 0, run_dir=fake_run(tmp_path / "p", [0.3, 0.3, 0.4], None, None), **PROCESS)]
    text = "\n".join(findings_section(group_arms(runs)))
    assert "S1 (process vs outcome): **not met**" in text and "trace accuracy" not in text
    # trace accuracy at steps 0, 10, 20: outcome 0.2, 0.2, 0.3 (its final 0.3 reached at step 20); process 0.2, 0.3,
    # 0.4 reaches 0.3 at step 10 -> 0.5x the steps: met by its steps, while by the answer it is not met
    logged = ((runs[0], [0.3, 0.4, 0.5], [0.2, 0.2, 0.3]), (runs[1], [0.3, 0.3, 0.4], [0.2, 0.3, 0.4]))
    for run, accuracy, trace in logged:  # the eval rows again, now with trace accuracy (the last row of a step wins)
        rows = [{"kind": "eval", "round": r, "rl_step": 10 * r, "accuracy": accuracy[r], "trace_accuracy": trace[r]}
                for r in range(3)]
        append_jsonl(run.run_dir / "metrics.jsonl", rows)
    text = "\n".join(findings_section(group_arms(runs)))
    assert "S1 (process vs outcome): **not met**" in text
    assert ("S1 by trace accuracy (every step right): **met**. Goal: a process arm reaches `outcome`'s final "
            "seed-mean trace accuracy 0.300 in <= 0.7x its RL steps (it reached it at RL step 20).") in text
    assert "`process`: reaches it at 0.50x the steps; final trace accuracy 0.400 vs 0.300, difference +0.100" in text


def test_s2_not_met_says_whether_the_fixed_prm_went_stale(tmp_path: Path):
    fixed = {**PROCESS, "rm_update": "fixed"}
    # finals iterative [0.6, 0.5], fixed [0.5, 0.6]: difference 0 -> not met. Last-round F1 iterative [0.94, 0.96]
    # vs fixed [0.945, 0.935]: difference +0.010, Welch se = sqrt(0.0002/2 + 0.00005/2) = 0.01118, t_1 12.7062 ->
    # ± 0.142, contains 0: not measurably staler
    runs = [RunInfo("process-prm-iterative", s, run_dir=fake_run(tmp_path / f"i{s}", [0.2, 0.5, final], [0.9, 0.95, f1],
                                                                 None), **PROCESS)
            for s, final, f1 in ((0, 0.6, 0.94), (1, 0.5, 0.96))]
    runs += [RunInfo("process-prm-fixed", s, run_dir=fake_run(tmp_path / f"f{s}", [0.2, 0.5, final], [0.9, 0.95, f1],
                                                             None), **fixed)
             for s, final, f1 in ((0, 0.5, 0.945), (1, 0.6, 0.935))]
    text = "\n".join(findings_section(group_arms(runs)))
    assert "S2 (iterative vs fixed PRM, sum credit): **not met**" in text
    assert ("The fixed PRM did not go measurably staler than the iterative one (the F1 difference's CI contains 0 "
            "in every round)") in text
    # band F1 logged (a curriculum): S2 reads it instead, and a clear gap there is named as staleness
    for run, band in zip(runs, ([0.9, 0.9, 0.9], [0.9, 0.9, 0.92], [0.9, 0.7, 0.6], [0.9, 0.7, 0.62])):
        append_jsonl(run.run_dir / "metrics.jsonl", [
            {"kind": "eval", "round": r, "rl_step": 10 * r, "band_prm_first_error_f1": band[r],
             "band_prm_missed_error_rate": 1 - band[r]} for r in range(3)])
    text = "\n".join(findings_section(group_arms(runs)))
    # last round: iterative [0.9, 0.92] vs fixed [0.6, 0.62]: +0.300, se = sqrt(0.0002/2 + 0.0002/2) = 0.01414 -> ± 0.180
    assert "the current curriculum band's held-out samples" in text
    # round 1: iterative [0.9, 0.9] vs fixed [0.7, 0.7]: +0.200 ± 0.000, also staler
    assert "The fixed PRM is measurably staler in round(s) r1, r2 (F1 +0.300 ± 0.180 behind in r2" in text
    assert "it passed 0.390 ± 0.127 of the wrong samples as right vs 0.090 ± 0.127" in text
    # finals [0.6, 0.5] vs [0.5, 0.6]: difference 0, Welch se = sqrt(0.005/2 + 0.005/2) = 0.0707 x 12.7062 = 0.898
    assert "these seeds resolve only accuracy differences beyond ± 0.898" in text
