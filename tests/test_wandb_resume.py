"""End-to-end: a `loop` killed in the middle of round 2's GRPO and resumed leaves one W&B run (its offline files
together, read back with tests/wandb_records.py) holding each RL step, each evaluation round and each completions table
exactly once, with the values metrics.jsonl holds."""

import math
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from test_loop import ARM, ROOT, _cli, _env, _rows
from wandb_records import offline_history

TIMING = ("train/time/", "train/step_time", "train/tokens_per_second", "eval/rm_seconds")


@pytest.mark.slow
def test_loop_killed_mid_grpo_resumes_with_each_wandb_row_once(tmp_path: Path):
    out = tmp_path / "run"
    args = ["loop", "--config", "configs/quick.yaml", "--out", str(out), "--set", f"loop.cache_dir={tmp_path}/cache",
            "--set", "tracking.mode=offline", "--set", "sft.steps=5", "--set", "loop.init_label_problems=8",
            "--set", "loop.label_problems=4", "--set", "loop.eval_problems=4"]  # smaller still than quick.yaml
    # commit:r2/grpo: round 2's RL rows are logged (and cut from metrics.jsonl on resume), its commit is not.
    killed = subprocess.run(_cli(*args), cwd=ROOT, env={**_env(), "PRMLOOP_CRASH_AT": "commit:r2/grpo"},
                            capture_output=True, check=False)
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    done = subprocess.run(_cli(*args, "--resume"), cwd=ROOT, env=_env(), capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    run_dir = out / ARM
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2  # the killed process and the resumed one
    rows = offline_history(run_dir)
    metrics = Counter((row.get("round"), row.get("rl_step"), key) for row in rows for key in row
                      if key not in ("round", "rl_step") and not key.startswith("_"))
    assert set(metrics.values()) == {1}, [key for key, count in metrics.items() if count > 1]
    assert sorted(row["rl_step"] for row in rows if "train/reward" in row) == [1, 2, 3, 4]  # 2 rounds x 2 steps
    assert sorted(row["round"] for row in rows if "eval/accuracy" in row) == [0, 1, 2]
    assert sorted(row["round"] for row in rows if "samples/completions" in row) == [0, 1, 2]
    assert sorted(row["round"] for row in rows if "eval/rm_train_loss" in row) == [2]  # the reward model retrained

    logged: dict[tuple, dict] = {}  # (round, rl_step) -> every W&B metric there (each logged once, so none is lost)
    for row in rows:
        logged.setdefault((row.get("round"), row.get("rl_step")), {}).update(row)
    local = _rows(run_dir / "metrics.jsonl")  # the ground truth, which W&B mirrors
    assert [row["rl_step"] for row in local if row["kind"] == "rl"] == [1, 2, 3, 4]
    for row in local:
        at = logged[(row["round"], row["rl_step"])]
        for key, value in row.items():
            name = f"{'train' if row['kind'] == 'rl' else 'eval'}/{key}"
            if key in ("kind", "round", "rl_step") or name.startswith(TIMING):
                continue
            assert value == at[name] or (value is None and math.isnan(at[name])) or math.isclose(
                value, at[name], rel_tol=1e-5, abs_tol=1e-6), name
