"""W&B from `prmloop grpo` and `prmloop prm train` (loop/tracking.py's job_run, wired in loop/jobs_grpo.py and
loop/jobs_prm.py): the loop's grouping and metric names, a --resume that continues the same run id and logs no step
twice, and no run at all from a process that is not the main one. Offline runs are read back with the test-only
tests/wandb_records.py (wandb.Api cannot read offline runs)."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from test_grpo import _grpo_job_setup
from wandb_records import offline_history, run_info

from prmloop.loop.config import TrackingConfig
from prmloop.loop.tracking import RECORD_FILE, RUN_ID_FILE, is_main_process, job_run
from prmloop.utils.errors import UserError


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "RANK"):
        monkeypatch.delenv(name, raising=False)


def _end_process() -> None:
    """Close the W&B files as a process's exit does (so the offline files hold their last rows)."""
    import wandb

    wandb.teardown()


def _runs(out: Path) -> list[dict]:
    return [run_info(path) for path in sorted(out.rglob("offline-run-*/run-*.wandb"))]


def test_main_process_only(tmp_path: Path, clean_env):
    assert is_main_process({}) and is_main_process({"RANK": "0"}) and not is_main_process({"RANK": "1"})
    run = job_run(tmp_path / "out", "grpo", "exp", TrackingConfig(mode="offline"), {}, [], is_main=False,
                  resume=False)
    run.log({"train/reward": 1.0}, {"round": 1, "rl_step": 1})
    run.set_summary({"final_accuracy": 1.0})
    run.finish()
    assert not run.active and not (tmp_path / "out").exists()  # no W&B run, no file, not even the folder
    with pytest.raises(UserError, match=r"^tracking.mode: 'sometimes' is not one of"):
        job_run(tmp_path / "out", "grpo", "exp", TrackingConfig(mode="sometimes"), {}, [], is_main=True,
                resume=False)


def test_grpo_job_logs_the_loop_keys_and_resumes_the_same_run(tmp_path: Path, clean_env):
    from prmloop.loop.jobs_grpo import grpo_job

    cfg, policy_dir = _grpo_job_setup(tmp_path, "outcome", "rule")
    cfg.name = "exp1"
    out = tmp_path / "run"
    grpo_job(cfg, str(policy_dir), None, str(out), resume=False)
    _end_process()
    run_id = (out / RUN_ID_FILE).read_text().strip()
    cfg.grpo.steps = 3
    grpo_job(cfg, str(policy_dir), None, str(out), resume=True)
    _end_process()
    first, second = _runs(out)
    assert first["id"] == second["id"] == run_id and run_id.startswith("grpo-")
    assert (first["name"], first["group"], first["job_type"]) == ("grpo-exp1", "exp1", "grpo")
    assert first["tags"] == ["outcome", "rule", "sum"]
    assert first["config"]["supervision"] == "outcome" and first["config"]["sections"]["grpo"]["group_size"] == 2
    rows = offline_history(out)
    counts = Counter((row.get("round"), row.get("rl_step"), key) for row in rows for key in row
                     if key not in ("round", "rl_step") and not key.startswith("_"))
    assert set(counts.values()) == {1}  # the resumed run logs nothing twice
    assert [row["_step"] for row in rows] == list(range(len(rows)))  # one growing step across both processes
    assert [row["rl_step"] for row in rows if "train/reward" in row] == [1, 2, 3]  # the loop's keys and axis
    assert "train/loss" in next(row for row in rows if "train/reward" in row)
    accuracy = [(row["round"], row["rl_step"]) for row in rows if "eval/accuracy" in row]
    assert accuracy == [(0, 0), (1, 2), (1, 3)]  # start; end of each process (the resumed start is not re-logged)
    local = [json.loads(line) for line in (out / "grpo_metrics.jsonl").read_text().splitlines()]
    by_step = {row["rl_step"]: row["train/reward"] for row in rows if "train/reward" in row}
    assert by_step == {row["step"] + 1: row["reward"] for row in local}
    assert {line["run_id"] for line in map(json.loads, (out / RECORD_FILE).read_text().splitlines())} == {run_id}


def test_prm_train_job_logs_epochs_and_summary(tmp_path: Path, clean_env, monkeypatch):
    from test_prm_train import build_task_tokenizer, tiny_random_model, toy_examples

    from prmloop.loop.config import ExperimentConfig
    from prmloop.loop.jobs_prm import train_prm_job
    from prmloop.prm.config import PRMConfig
    from prmloop.utils.jsonl import write_jsonl

    tokenizer = build_task_tokenizer()
    tiny_random_model("llama", tokenizer, seed=0).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    write_jsonl(tmp_path / "data.jsonl", [e.to_row() for e in toy_examples(24, seed=0, soft=True)])
    cfg = ExperimentConfig(name="exp2")
    cfg.prm = PRMConfig(epochs=2, batch_size=8, val_fraction=0.25, max_length=64)
    summary = train_prm_job(cfg, str(tmp_path / "data.jsonl"), str(tmp_path / "prm"), str(tmp_path / "policy"), None)
    _end_process()
    (info,) = _runs(tmp_path / "prm")
    assert (info["name"], info["group"], info["job_type"]) == ("prm-train-exp2", "exp2", "prm-train")
    assert info["id"] == (tmp_path / "prm" / RUN_ID_FILE).read_text().strip()
    assert info["config"]["epochs"] == 2 and info["config"]["command"] == "prm train"
    rows = offline_history(tmp_path / "prm")
    epochs = [row for row in rows if "epoch" in row]
    assert [row["epoch"] for row in epochs] == [1, 2] and "prm/val_step_acc" in epochs[0]
    assert [row["prm/train_loss"] for row in epochs] == [row["train_loss"] for row in summary["history"]]
    (final,) = [row for row in rows if "eval/rm_train_loss" in row]
    assert final["eval/rm_train_loss"] == summary["train_loss"] and final["eval/rm_n_train"] == 18
    monkeypatch.setenv("RANK", "1")  # as a second process under accelerate launch: trains, logs nothing
    from prmloop.loop.jobs_prm import prm_wandb_run

    run = prm_wandb_run(cfg, str(tmp_path / "prm-rank1"), "init", "data", is_main_process(os.environ))
    assert not run.active and not (tmp_path / "prm-rank1").exists()
