"""Tests for loop/report.py: reports built from fake metrics.jsonl files (statistics: test_report_stats.py)."""

from pathlib import Path

import pytest

from prmloop.loop.report import HEADLINE, report_sections, write_report
from prmloop.loop.report_stats import RunInfo
from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import append_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(run_dir: Path, accuracy: list[float], f1: list[float] | None, score: list[float] | None) -> Path:
    """metrics.jsonl for rounds 0..len-1: eval at rl_step 10*round, RL rows between, like the orchestrator writes."""
    rows = []
    for r, acc in enumerate(accuracy):
        if r > 0:
            rows.append({"kind": "rl", "round": r, "rl_step": 10 * r - 1, "reward": 0.5, "kl": None})
        rows.append({"kind": "eval", "round": r, "rl_step": 10 * r, "accuracy": acc, "maj_at_k": acc,
                     "prm_first_error_f1": f1[r] if f1 else None, "prm_score_mean": score[r] if score else None})
    append_jsonl(run_dir / "metrics.jsonl", rows)
    return run_dir


OUTCOME = {"supervision": "outcome", "reward_source": "answer", "rm_update": "fixed", "credit": "sum"}
PROCESS = {"supervision": "process", "reward_source": "prm", "rm_update": "iterative", "credit": "sum"}


def two_by_two(tmp_path: Path) -> list[RunInfo]:
    runs = [
        RunInfo("outcome", 0, run_dir=fake_run(tmp_path / "o0", [0.2, 0.4, 0.5], None, None), **OUTCOME),
        RunInfo("outcome", 1, run_dir=fake_run(tmp_path / "o1", [0.2, 0.5, 0.6], None, None), **OUTCOME),
        RunInfo("process", 0, run_dir=fake_run(tmp_path / "p0", [0.2, 0.6, 0.7], [0.4, 0.5, 0.6], [0.5, 0.8, 0.9]),
                **PROCESS),
        RunInfo("process", 1, run_dir=fake_run(tmp_path / "p1", [0.2, 0.5, 0.7], [0.6, 0.7, 0.8], [0.5, 0.6, 0.9]),
                **PROCESS),
    ]
    # a resumed run re-logged round 2 of p1 (the last row wins), then crashed mid-append (torn tail is skipped)
    append_jsonl(tmp_path / "p1" / "metrics.jsonl", [{"kind": "eval", "round": 2, "rl_step": 20, "accuracy": 0.7,
                                                      "prm_first_error_f1": 0.8, "prm_score_mean": 0.9}])
    # an evaluation split over two calls at the same (round, rl_step): merged, so p0's accuracy is still read
    append_jsonl(tmp_path / "p0" / "metrics.jsonl", [{"kind": "eval", "round": 2, "rl_step": 20, "rm_loss": 0.3}])
    with (tmp_path / "p1" / "metrics.jsonl").open("ab") as handle:
        handle.write(b'{"kind": "eval", "round": 3, "rl_st')
    return runs


def test_report_two_arms_two_seeds(tmp_path: Path):
    path = write_report(tmp_path / "report", two_by_two(tmp_path), title="PS vs OS")
    text = path.read_text()
    assert path == tmp_path / "report" / "report.md" and text.startswith("# PS vs OS\n")
    # outcome finals [0.5, 0.6] -> 0.550 ± 0.635 (see test_mean_ci_hand_values); starts [0.2, 0.2] -> ± 0
    assert "| outcome | 2 | 0.200 ± 0.000 | 0.550 ± 0.635 | 0.500, 0.600 |" in text
    assert "| process | 2 | 0.200 ± 0.000 | 0.700 ± 0.000 | 0.700, 0.700 |" in text
    # seed means: outcome [0.2, 0.45, 0.55] reaches 0.55 at step 20; process [0.2, 0.55, 0.7] at step 10
    assert "| outcome | 20 | 20.000 |" not in text  # the step column is an integer step
    assert "| outcome | 20 | 20 |" in text and "| process | 10 | 20 |" in text
    assert "`outcome`, 0.550" in text
    # F1 per round: process seed mean [(0.4+0.6)/2, (0.5+0.7)/2, (0.6+0.8)/2]; outcome logged none
    assert "| round | outcome | process |" in text
    # [0.4, 0.6]: sd 0.1414 / sqrt(2) = 0.1, x t_1 12.7062 -> ± 1.271 (the same spread in round 2)
    assert "| 0 | – | 0.500 ± 1.271 |" in text and "| 2 | – | 0.700 ± 1.271 |" in text
    assert "No two arms differ only in `rm_update`" in text
    # hacking: score means [0.5, 0.7, 0.9] - accuracy means [0.2, 0.55, 0.7] = +0.300, +0.150, +0.200
    assert "| process | 0 | 0.500 | 0.200 | `accuracy` | +0.300 |" in text
    assert "| process | 1 | 0.700 | 0.550 | `accuracy` | +0.150 |" in text
    assert "| process | 2 | 0.900 | 0.700 | `accuracy` | +0.200 |" in text
    for name in ("accuracy_vs_rl_step.png", "prm_f1_per_round.png", "prm_score_vs_accuracy.png"):
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"]({name})" in text  # embedded with a relative link


def test_report_shows_trace_accuracy_where_logged(tmp_path: Path):
    runs = two_by_two(tmp_path)
    # the outcome arm's seeds also logged trace accuracy: start 0.1 / 0.1, final 0.3 / 0.4 -> 0.350 ± 0.635
    for run, accuracy, trace in ((runs[0], 0.5, 0.3), (runs[1], 0.6, 0.4)):  # re-logged rows: the last one wins
        append_jsonl(run.run_dir / "metrics.jsonl", [
            {"kind": "eval", "round": 0, "rl_step": 0, "accuracy": 0.2, "trace_accuracy": 0.1},
            {"kind": "eval", "round": 2, "rl_step": 20, "accuracy": accuracy, "trace_accuracy": trace}])
    text = write_report(tmp_path / "report", runs, title="t").read_text()
    assert "| arm | seeds | start accuracy | final accuracy | final per seed | start trace accuracy | final trace accuracy |" in text
    assert "| outcome | 2 | 0.200 ± 0.000 | 0.550 ± 0.635 | 0.500, 0.600 | 0.100 ± 0.000 | 0.350 ± 0.635 |" in text
    assert "| process | 2 | 0.200 ± 0.000 | 0.700 ± 0.000 | 0.700, 0.700 | – | – |" in text
    assert "](trace_accuracy_vs_rl_step.png)" in text
    assert (tmp_path / "report" / "trace_accuracy_vs_rl_step.png").read_bytes()[:8] == PNG_MAGIC
    plain = write_report(tmp_path / "plain", two_by_two(tmp_path / "again"), title="t").read_text()
    assert "trace accuracy" not in plain and "trace_accuracy" not in plain  # nothing logged: no columns, no plot
    assert not (tmp_path / "plain" / "trace_accuracy_vs_rl_step.png").exists()


def test_report_sections_keep_the_named_sections_as_text():
    text = "# title\n\nintro\n\n## The questions\n\n- S1\n\n## Arms\n\n| a |\n\n## Final held-out accuracy\n\n| f |\n\n![plot](a.png)\n"
    assert report_sections(text, HEADLINE) == "## The questions\n\n- S1\n\n## Final held-out accuracy\n\n| f |"
    assert report_sections(text, ("nothing",)) == ""


def test_report_fixed_vs_iterative_single_seed_no_outcome(tmp_path: Path):
    fixed = {**PROCESS, "rm_update": "fixed"}
    runs = [RunInfo("ps-fixed", 0, run_dir=fake_run(tmp_path / "f", [0.3, 0.4], None, [0.6, 0.9]), **fixed),
            RunInfo("ps-iterative", 0, run_dir=fake_run(tmp_path / "i", [0.3, 0.5], None, None), **PROCESS)]
    append_jsonl(tmp_path / "f" / "metrics.jsonl", [{"kind": "eval", "round": 1, "rl_step": 10, "sample_accuracy": 0.25}])
    text = write_report(tmp_path / "out", runs, title="RM update").read_text()
    assert "| ps-fixed | 1 | 0.300 (n=1, no CI) | 0.400 (n=1, no CI) | 0.400 |" in text
    assert "iterative − fixed final accuracy = +0.100" in text  # 0.5 - 0.4
    assert "No arm uses outcome supervision" in text
    assert "No run logged `prm_first_error_f1`" in text
    # the PRM's score is compared with the accuracy of the samples it scored when logged: 0.9 - 0.25 = +0.650
    assert "| ps-fixed | 1 | 0.900 | 0.250 | `sample_accuracy` | +0.650 |" in text
    # with a step verifier the samples' trace accuracy is logged too, and the gap is taken against it: 0.9 - 0.125
    append_jsonl(tmp_path / "f" / "metrics.jsonl", [{"kind": "eval", "round": 1, "rl_step": 10,
                                                     "sample_trace_accuracy": 0.125}])
    text = write_report(tmp_path / "out2", runs, title="RM update").read_text()
    assert "| ps-fixed | 1 | 0.900 | 0.125 | `sample_trace_accuracy` | +0.775 |" in text
    assert not (tmp_path / "out" / "prm_f1_per_round.png").exists() and "prm_f1_per_round.png" not in text
    assert (tmp_path / "out" / "accuracy_vs_rl_step.png").stat().st_size > 0


def test_report_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="metrics.jsonl: no such file"):
        write_report(tmp_path / "out", [RunInfo("a", 0, run_dir=tmp_path / "absent", **OUTCOME)], title="t")
    run_dir = fake_run(tmp_path / "a", [0.1], None, None)
    runs = [RunInfo("a", 0, run_dir=run_dir, **OUTCOME), RunInfo("a", 1, run_dir=run_dir, **PROCESS)]
    with pytest.raises(UserError, match="arm 'a': seed 1"):
        write_report(tmp_path / "out", runs, title="t")


def test_rm_update_section_keeps_the_mix_arm_out_of_the_fixed_vs_iterative_pair(tmp_path: Path):
    fixed = {**PROCESS, "rm_update": "fixed"}
    runs = [RunInfo("process-prm-iterative", 0, run_dir=fake_run(tmp_path / "i", [0.2, 0.5], None, None), **PROCESS),
            RunInfo("process-prm-fixed", 0, run_dir=fake_run(tmp_path / "f", [0.2, 0.4], None, None), **fixed),
            RunInfo("process-prm-iterative-mix", 0, run_dir=fake_run(tmp_path / "m", [0.2, 0.9], None, None),
                    **PROCESS)]
    text = write_report(tmp_path / "report", runs, title="t").read_text()
    # the pair is iterative 0.5 vs fixed 0.4 (+0.100); the mix arm (0.9) has no fixed partner and stays out
    assert "- process / prm / sum: iterative − fixed final accuracy = +0.100." in text
    assert "process-prm-iterative-mix | iterative" not in text
