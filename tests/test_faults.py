"""Fault injection: kill a real run at its commit and swap points (PRMLOOP_CRASH_AT, data/faults.py), resume it,
and require exactly the metrics of an uninterrupted run, with no row lost or repeated — for `loop` and `grpo`."""

import math
import os
import subprocess
from pathlib import Path

import pytest
from test_loop import _cli, _env, _loop_args, _rows

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time", "rm_seconds")


def _same_metrics(mine: list[dict], reference: list[dict]) -> None:
    assert len(mine) == len(reference)
    for a_row, b_row in zip(mine, reference):
        assert a_row.keys() == b_row.keys()
        for key, a in a_row.items():
            if key.startswith(TIMING) or key in ("step_time", "tokens_per_second", "seconds"):
                continue
            b = b_row[key]
            assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)), key


def _crash(args: list[str], point: str) -> None:
    env = {**_env(), "PRMLOOP_CRASH_AT": point}
    done = subprocess.run(_cli(*args), cwd=ROOT, env=env, capture_output=True, check=False)
    assert done.returncode == 137, f"{point}: never reached ({done.returncode}) {done.stderr.decode()[-1500:]}"


@pytest.mark.slow
def test_loop_killed_at_every_commit_kind_resumes_to_the_uninterrupted_metrics(tmp_path):
    cache = tmp_path / "cache"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cli(*_loop_args(whole, cache)), cwd=ROOT, env=_env(), check=True, capture_output=True)
    points = ["commit:init/label", "commit:train_prm0", "commit:r0/eval", "commit:r2/rm", "commit:r2/grpo",
              "commit:r2/eval"]
    _crash(_loop_args(killed, cache), points[0])
    for point in points[1:]:  # each resume dies at the next point
        _crash([*_loop_args(killed, cache), "--resume"], point)
    done = subprocess.run(_cli(*_loop_args(killed, cache), "--resume"), cwd=ROOT, env=_env(), capture_output=True,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    arm = Path("arms/process-prm-iterative/seed0")
    metrics = _rows(killed / arm / "metrics.jsonl")
    assert [r["rl_step"] for r in metrics if r["kind"] == "rl"] == [1, 2, 3, 4]  # none lost, none repeated
    _same_metrics(metrics, _rows(whole / arm / "metrics.jsonl"))
    assert sorted(p.name for p in (killed / arm / "policy").iterdir()) == ["round2"]  # no leftovers


@pytest.mark.slow
def test_grpo_killed_inside_a_checkpoint_swap_resumes_without_repeats(tmp_path):
    policy = tmp_path / "policy"
    common = ["--config", "configs/quick.yaml", "--set", "grpo.steps=4", "--set", "grpo.checkpoint_every=1", "--set",
              "grpo.supervision=outcome", "--set", "grpo.reward_source=rule"]
    subprocess.run(_cli("policy", "init", "--out", str(policy), "--config", "configs/quick.yaml"), cwd=ROOT,
                   env=_env(), check=True, capture_output=True)
    grpo = ["grpo", "--policy", str(policy), *common]
    subprocess.run(_cli(*grpo, "--out", str(tmp_path / "whole")), cwd=ROOT, env=_env(), check=True,
                   capture_output=True)
    _crash([*grpo, "--out", str(tmp_path / "killed")], "swap:grpo-checkpoint")  # the second save's swap
    checkpoint = tmp_path / "killed" / "checkpoint"
    assert not checkpoint.exists() and (tmp_path / "killed" / ".checkpoint.old").is_dir()  # killed between renames
    done = subprocess.run(_cli(*grpo, "--out", str(tmp_path / "killed"), "--resume"), cwd=ROOT, env=_env(),
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    rows = _rows(tmp_path / "killed" / "grpo_metrics.jsonl")
    assert [row["step"] for row in rows] == [0, 1, 2, 3]  # resumed from step 1's checkpoint, no step twice
    _same_metrics(rows, _rows(tmp_path / "whole" / "grpo_metrics.jsonl"))
    assert os.listdir(tmp_path / "killed").count(".checkpoint.old") == 0


def test_disk_full_in_an_atomic_write_is_one_line_exit_1_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "problems.jsonl"
    subprocess.run(_cli("data", "generate", "--n", "4", "--out", str(out)), cwd=ROOT, env=_env(), check=True,
                   capture_output=True)
    before = out.read_bytes()
    done = subprocess.run(_cli("data", "generate", "--n", "50", "--seed", "3", "--out", str(out)), cwd=ROOT,
                          env={**_env(), "PRMLOOP_DISK_FULL": "problems.jsonl"}, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == f"prmloop: error: {out}: No space left on device"
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["problems.jsonl"]  # no temp file left


@pytest.mark.slow
def test_disk_full_mid_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    cache = tmp_path / "cache"
    whole, full = tmp_path / "whole", tmp_path / "full"
    args = [*_loop_args(whole, cache), "--set", "loop.rounds=1"]
    subprocess.run(_cli(*args), cwd=ROOT, env=_env(), check=True, capture_output=True)
    args = [*_loop_args(full, cache), "--set", "loop.rounds=1"]
    done = subprocess.run(_cli(*args), cwd=ROOT, env={**_env(), "PRMLOOP_DISK_FULL": "metrics.jsonl"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stderr.strip().endswith("metrics.jsonl: No space left on device"), done.stderr
    metrics = Path(full / "arms/process-prm-iterative/seed0/metrics.jsonl")
    assert not metrics.read_bytes().endswith(b"\n")  # the disk filled up mid-row: a torn line
    done = subprocess.run(_cli(*args, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_metrics(_rows(metrics), _rows(whole / "arms/process-prm-iterative/seed0/metrics.jsonl"))
