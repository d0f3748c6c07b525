"""End-to-end: a `loop` killed in the middle of round 2's GRPO and resumed continues one W&B run (same id, wandb's own
resume; offline files read back with the test-only tests/wandb_records.py): every RL step, evaluation round and
completions table is handed to W&B exactly once over both processes (our record, wandb_logged.jsonl), at steps that keep
growing; W&B holds each at most once, with the values metrics.jsonl holds (rows wandb had not written when the process
was killed are missing from W&B: wandb's loss, not ours to repair through its public API)."""

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
    record = _rows(run_dir / "wandb_logged.jsonl")
    assert len({line["run_id"] for line in record}) == 1
    assert [line["step"] for line in record] == list(range(len(record)))  # growing across the resume
    handed = Counter((line["at"].get("round"), line["at"].get("rl_step"), key) for line in record
                     for key in line["keys"])
    assert set(handed.values()) == {1}, [key for key, count in handed.items() if count > 1]
    assert sorted(step for (_, step, key) in handed if key == "train/reward") == [1, 2, 3, 4]  # 2 rounds x 2 steps
    assert sorted(r for (r, _, key) in handed if key == "eval/accuracy") == [0, 1, 2]
    assert sorted(r for (r, _, key) in handed if key == "samples/completions") == [0, 1, 2]
    assert sorted(r for (r, _, key) in handed if key == "eval/rm_train_loss") == [2]  # the reward model retrained

    rows = offline_history(run_dir)
    metrics = Counter((row.get("round"), row.get("rl_step"), key) for row in rows for key in row
                      if key not in ("round", "rl_step") and not key.startswith("_"))
    assert set(metrics.values()) == {1} and set(metrics) <= set(handed)
    assert (2, 4, "eval/accuracy") in metrics  # logged by the resumed process only
    steps = [row["_step"] for row in rows]
    assert steps == sorted(set(steps))

    logged: dict[tuple, dict] = {}  # (round, rl_step) -> every W&B metric there (each logged once)
    for row in rows:
        logged.setdefault((row.get("round"), row.get("rl_step")), {}).update(row)
    local = _rows(run_dir / "metrics.jsonl")  # the ground truth, which W&B mirrors
    assert [row["rl_step"] for row in local if row["kind"] == "rl"] == [1, 2, 3, 4]
    for row in local:
        at = logged.get((row["round"], row["rl_step"]), {})
        for key, value in row.items():
            name = f"{'train' if row['kind'] == 'rl' else 'eval'}/{key}"
            if key in ("kind", "round", "rl_step") or name.startswith(TIMING) or name not in at:
                continue
            assert value == at[name] or (value is None and math.isnan(at[name])) or math.isclose(
                value, at[name], rel_tol=1e-5, abs_tol=1e-6), name
