"""Tests for loop/tracking.py: metrics.jsonl rows, NaN -> null, mode resolution, W&B offline files, W&B failure."""

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

from prmloop.data.errors import UserError
from prmloop.data.jsonl import read_jsonl_tolerant
from prmloop.loop.tracking import Tracker, metrics_row, resolve_mode, wandb_sync_hint

ARGS = {"project": "prmloop-test", "group": "exp", "name": "process-prm-iterative-sum-s0", "job_type": "process",
        "tags": ["test"], "config": {"supervision": "process", "reward_source": "prm", "rm_update": "iterative",
                                     "credit": "sum", "seed": 0}}


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)


def test_resolve_mode():
    assert resolve_mode("offline", {}) == "offline"
    assert resolve_mode("offline", {"WANDB_MODE": "online"}) == "online"  # the user's environment wins
    assert resolve_mode("online", {"WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode("online", {"WANDB_DISABLED": "true"}) == "disabled"
    assert resolve_mode("online", {"WANDB_MODE": "", "WANDB_DISABLED": "false"}) == "online"
    with pytest.raises(UserError, match="'dryrun'"):
        resolve_mode("dryrun", {})


def test_metrics_row_order_nan_and_tensors():
    row = metrics_row("rl", {"reward": torch.tensor(0.25), "kl": math.nan, "loss": -math.inf, "n": 3}, 7, 1)
    assert list(row) == ["kind", "round", "rl_step", "reward", "kl", "loss", "n"]
    assert row == {"kind": "rl", "round": 1, "rl_step": 7, "reward": 0.25, "kl": None, "loss": None, "n": 3}
    with pytest.raises(ValueError, match="round"):
        metrics_row("eval", {"round": 2}, 0, 0)
    with pytest.raises(TypeError, match="'hist'"):
        metrics_row("eval", {"hist": [1, 2]}, 0, 0)


def test_disabled_mode_writes_only_local_files(tmp_path: Path, clean_env):
    tracker = Tracker(tmp_path, mode="disabled", **ARGS)
    tracker.log_rl({"reward": 0.5, "kl": float("nan")}, rl_step=0, round=0)
    tracker.log_rl({"reward": 0.75, "kl": float("inf")}, rl_step=1, round=0)
    tracker.log_eval({"accuracy": 0.4, "prm_first_error_f1": math.nan}, rl_step=2, round=1)
    path = tracker.log_completions([{"prompt": "1+2=", "completion": "3", "reward": math.nan, "correct": True,
                                     "steps": 1}], round=1)
    tracker.finish()
    tracker.finish()  # twice is fine
    assert not tracker.wandb_active
    assert sorted(p.name for p in tmp_path.iterdir()) == ["completions_round1.jsonl", "metrics.jsonl"]
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: non-finite values are null
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == [
        {"kind": "rl", "round": 0, "rl_step": 0, "reward": 0.5, "kl": None},
        {"kind": "rl", "round": 0, "rl_step": 1, "reward": 0.75, "kl": None},
        {"kind": "eval", "round": 1, "rl_step": 2, "accuracy": 0.4, "prm_first_error_f1": None},
    ]
    assert path == tmp_path / "completions_round1.jsonl"
    assert read_jsonl_tolerant(path) == [{"prompt": "1+2=", "completion": "3", "reward": None, "correct": True,
                                          "steps": 1}]


def test_wandb_mode_from_environment_is_respected(tmp_path: Path, clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker(tmp_path, mode="offline", **ARGS)
    tracker.log_eval({"accuracy": 1.0}, rl_step=0, round=0)
    tracker.finish()
    assert tracker.mode == "disabled" and not tracker.wandb_active
    assert not (tmp_path / "wandb").exists()


def test_wandb_import_failure_warns_and_keeps_local_log(tmp_path: Path, clean_env, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with caplog.at_level(logging.WARNING, logger="prmloop.loop.tracking"):
        tracker = Tracker(tmp_path, mode="offline", **ARGS)
    assert not tracker.wandb_active
    assert len(caplog.records) == 1 and "start failed" in caplog.text and "metrics.jsonl" in caplog.text
    tracker.log_rl({"reward": 1.0}, rl_step=0, round=0)
    tracker.log_completions([{"prompt": "p", "completion": "c", "reward": 1.0, "correct": True}], round=0)
    tracker.finish()
    assert read_jsonl_tolerant(tmp_path / "metrics.jsonl") == [{"kind": "rl", "round": 0, "rl_step": 0, "reward": 1.0}]


def test_wandb_init_failure_warns_and_keeps_local_log(tmp_path: Path, clean_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "sideways")  # wandb rejects this mode inside init
    with caplog.at_level(logging.WARNING, logger="prmloop.loop.tracking"):
        tracker = Tracker(tmp_path, mode="offline", **ARGS)
    assert tracker.mode == "sideways" and not tracker.wandb_active
    assert len(caplog.records) == 1 and "start failed" in caplog.text
    tracker.log_eval({"accuracy": 0.5}, rl_step=0, round=0)
    tracker.finish()
    assert read_jsonl_tolerant(tmp_path / "metrics.jsonl")[0]["accuracy"] == 0.5


def test_offline_run_then_resume_same_id(tmp_path: Path, clean_env):
    with Tracker(tmp_path, mode="offline", run_id="prmloop-test-s0", **ARGS) as tracker:
        assert tracker.wandb_active and tracker.run_id == "prmloop-test-s0"
        tracker.log_rl({"reward": 0.5, "kl": math.nan}, rl_step=0, round=0)
        tracker.log_eval({"accuracy": 0.3}, rl_step=1, round=0)
        tracker.log_completions([{"prompt": "p", "completion": "c", "reward": 0.5, "correct": False}], round=0)
    with (tmp_path / "metrics.jsonl").open("ab") as handle:
        handle.write(b'{"kind": "rl", "rou')  # a crash mid-append
    with Tracker(tmp_path, mode="offline", run_id="prmloop-test-s0", **ARGS) as tracker:  # resume: torn tail cut
        tracker.log_rl({"reward": 0.9}, rl_step=2, round=1)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*-prmloop-test-s0*"))  # "-1" added within one second
    assert len(runs) == 2  # one W&B directory per process start, same run id
    for run in runs:
        assert (run / "run-prmloop-test-s0.wandb").stat().st_size > 0
    rows = read_jsonl_tolerant(tmp_path / "metrics.jsonl")
    assert [(row["kind"], row["rl_step"]) for row in rows] == [("rl", 0), ("eval", 1), ("rl", 2)]
    hint = wandb_sync_hint(tmp_path)
    assert hint.startswith("wandb sync ") and all(str(run) in hint for run in runs)
    assert wandb_sync_hint(tmp_path / "nothing") == f"wandb sync {tmp_path / 'nothing' / 'wandb'}/offline-run-*"
