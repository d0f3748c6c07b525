"""End-to-end tests of the loop through the real CLI in subprocesses: the quick demo's artifacts, and resuming after
SIGKILL at several points with nothing lost, repeated or duplicated (compared with an uninterrupted run)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prmloop.utils.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ARM = Path("arms/process-prm-iterative/seed0")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prmloop.loop.cli", *args]


def _env() -> dict:
    """The CLI's environment: no W&B service of this pytest process leaking in, one torch thread per run."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    return {**inherited, "WANDB_SILENT": "true", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _loop_args(out: Path, cache: Path) -> list[str]:
    return ["loop", "--config", "configs/quick.yaml", "--out", str(out), "--set", f"loop.cache_dir={cache}",
            "--set", "tracking.mode=disabled"]


def _rows(path: Path) -> list[dict]:
    return [row for _, row in read_jsonl(path)]  # strict: a torn line would fail here


def _completed(path: Path) -> list[str]:
    try:
        return json.loads(path.read_text())["completed"]
    except (OSError, ValueError, KeyError):
        return []


def _run_until(args: list[str], stop_when, timeout: float = 120.0) -> None:
    """Start the CLI, SIGKILL it as soon as ``stop_when()`` holds (it must not finish first)."""
    process = subprocess.Popen(_cli(*args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not stop_when():
        assert process.poll() is None, f"run ended before the kill point: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cli(*_loop_args(whole, cache)), cwd=ROOT, env=_env(), check=True, capture_output=True)

    kill_points = [
        lambda: "init/sample" in _completed(killed / "shared/state.json"),  # shared stage: before its labels
        lambda: "r2/sample" in _completed(killed / ARM / "state.json"),  # between sampling and labelling/PRM
        lambda: any(r.get("kind") == "rl" and r["round"] == 2  # mid-GRPO of round 2 (rows not yet committed)
                    for r in _tolerant(killed / ARM / "metrics.jsonl")),
    ]
    _run_until(_loop_args(killed, cache), kill_points[0])
    for point in kill_points[1:]:
        _run_until([*_loop_args(killed, cache), "--resume"], point)
    done = subprocess.run(_cli(*_loop_args(killed, cache), "--resume"), cwd=ROOT, env=_env(), capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    assert _completed(killed / ARM / "state.json")[-1] == "finished"
    metrics = _rows(killed / ARM / "metrics.jsonl")
    rl_steps = [r["rl_step"] for r in metrics if r["kind"] == "rl"]
    assert rl_steps == [1, 2, 3, 4]  # 2 rounds x 2 steps, none lost or repeated
    evals = [r["round"] for r in metrics if r["kind"] == "eval" and "accuracy" in r]
    assert evals == [0, 1, 2]
    samples = _rows(killed / ARM / "samples.jsonl")
    # 8 problems x 2 samples, only before round 2 (round 1 uses the first PRM: its labels are the policy's already)
    assert [sum(r["round"] == k for r in samples) for k in (1, 2)] == [0, 16]
    assert len(_rows(killed / ARM / "labels.jsonl")) <= len(samples)
    assert len(_rows(killed / "shared/samples.jsonl")) == 32  # 16 problems x 2, not duplicated by the kill
    # Every stage is seeded, so the resumed run did exactly the work of the uninterrupted one.
    reference = _rows(whole / ARM / "metrics.jsonl")
    for mine, theirs in zip(metrics, reference, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            if key.startswith(("time", "rm_seconds")) or key in ("step_time", "tokens_per_second"):
                continue
            a, b = mine[key], theirs[key]
            assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)), key


def _tolerant(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


@pytest.mark.slow
def test_demo_quick_writes_report_plots_and_wandb_runs(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(_cli("demo", "--quick", "--out", str(out), "--set", f"loop.cache_dir={tmp_path / 'cache'}"),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "## The questions" in done.stdout and "## Final held-out accuracy" in done.stdout  # the headline, printed
    for arm in ("process-prm-iterative", "process-prm-fixed", "outcome-rule-fixed"):
        assert f"| {arm} |" in report
        run = out / "arms" / arm / "seed0"
        assert list((run / "wandb").glob("offline-run-*")), f"no offline W&B run for {arm}"
        evals = [r for r in _rows(run / "metrics.jsonl") if r["kind"] == "eval" and "accuracy" in r]
        assert [r["round"] for r in evals] == [0, 1, 2]
        assert all(math.isfinite(r["accuracy"]) and math.isfinite(r["prm_score_mean"]) for r in evals)
        assert all(0 <= r["trace_accuracy"] <= r["accuracy"] for r in evals)  # the embedded task has a step verifier
        rl = [r for r in _rows(run / "metrics.jsonl") if r["kind"] == "rl"]
        assert rl and all(math.isfinite(r["loss"]) and math.isfinite(r["reward"]) for r in rl)
    assert (out / "accuracy_vs_rl_step.png").stat().st_size > 5_000


def test_existing_run_without_resume_is_a_one_line_error(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/state.json").write_text('{"completed": [], "sizes": {}}')
    done = subprocess.run(_cli("loop", "--out", str(tmp_path)), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"prmloop: error: {tmp_path}: holds an earlier run; pass --resume to continue it or choose another --out"


def test_malformed_loop_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop:\n  rounds: two\n")
    done = subprocess.run(_cli("loop", "--config", str(bad), "--out", str(tmp_path / "o")), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"prmloop: error: {bad}: key 'loop.rounds' expects int, got str 'two'"


def test_a_diverging_round_is_rolled_back_and_not_committed(tmp_path):
    out = tmp_path / "run"
    args = [*_loop_args(out, tmp_path / "cache"), "--set", "grpo.lr=1e9", "--set", "loop.rounds=1"]
    done = subprocess.run(_cli(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "prmloop: error: process-prm-iterative seed 0 round 1: all 2 updates were skipped (2 x an update that moved "
        "the weights by more than grpo.max_weight_change (lower grpo.lr)); the round is not committed")
    assert not any("grpo" in stage for stage in _completed(out / ARM / "state.json"))
    assert not (out / ARM / "policy").exists()


def test_curve_points_by_hand():
    from prmloop.loop.orchestrator import _curve_point

    assert [s for s in range(1, 9) if _curve_point(s, 2, 4)] == [2, 6]  # 4 and 8 end a round: its full evaluation
    assert not any(_curve_point(s, 0, 4) for s in range(1, 9))


def test_eval_every_adds_greedy_accuracy_points_inside_a_round(tmp_path):
    out = tmp_path / "run"
    args = [*_loop_args(out, tmp_path / "cache"), "--set", "loop.rounds=1", "--set", "loop.rl_steps_per_round=3",
            "--set", "loop.eval_every=1"]
    done = subprocess.run(_cli(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    evals = [r for r in _rows(out / ARM / "metrics.jsonl") if r["kind"] == "eval" and "accuracy" in r]
    assert [(r["round"], r["rl_step"]) for r in evals] == [(0, 0), (1, 1), (1, 2), (1, 3)]
    # a curve point is greedy answer and trace accuracy only (the embedded task has a step verifier)
    assert set(evals[1]) == {"kind", "round", "rl_step", "accuracy", "trace_accuracy"} and "pass_at_4" in evals[3]
    assert 0 <= evals[1]["trace_accuracy"] <= evals[1]["accuracy"]


def test_spent_tokens_counts_labelling_samples_rollouts_and_training_of_the_mode_asked(tmp_path):
    from prmloop.loop.orchestrator import spent_tokens
    from prmloop.utils.jsonl import append_jsonl

    assert spent_tokens(tmp_path, 3, "process") == 0  # nothing spent yet: no files
    append_jsonl(tmp_path / "samples.jsonl", [{"round": 0, "tokens": 100}, {"round": 2, "tokens": 40}])
    append_jsonl(tmp_path / "costs.jsonl", [
        {"round": 0, "stage": "rm_training", "mode": "process", "tokens": 1000},
        {"round": 0, "stage": "rm_training", "mode": "outcome", "tokens": 900},  # the ORM's: not the PRM arm's cost
        {"round": 2, "stage": "label_rollouts", "tokens": 7}])
    assert spent_tokens(tmp_path, 0, "process") == 100 + 1000
    assert spent_tokens(tmp_path, 1, "outcome") == 100 + 900
    assert spent_tokens(tmp_path, 2, "process") == 100 + 40 + 1000 + 7


def test_implicit_arm_learns_online_and_keeps_its_prm_with_the_policy(tmp_path):
    from prmloop.prm.formats import detect_format

    out = tmp_path / "run"
    args = [*_loop_args(out, tmp_path / "cache"), "--set", "loop.rounds=1", "--set", "grpo.reward_source=implicit"]
    done = subprocess.run(_cli(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    run = out / "arms" / "process-implicit-online" / "seed0"
    rl = [r for r in _rows(run / "metrics.jsonl") if r["kind"] == "rl"]
    assert len(rl) == 2 and all(r["implicit/solutions"] > 0 and math.isfinite(r["implicit/loss"]) for r in rl)
    assert rl[0]["rewards/implicit/mean"] == 0.0  # φ = π_ref scores the first batch, then takes its first step
    assert detect_format(run / "policy" / "round1" / "implicit_prm") == "implicit"
    assert not (run / "labels.jsonl").exists()  # no step labels: the answer check of its own rollouts only
