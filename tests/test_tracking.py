"""Tests for loop/tracking.py: metrics.jsonl rows, NaN -> null, mode resolution, W&B offline files, W&B failure, and
a resumed W&B run holding each metric once (read back from the offline run files with tests/wandb_records.py)."""

import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from wandb_records import history_rows, offline_history

from prmloop.data.errors import UserError
from prmloop.data.jsonl import read_jsonl_tolerant
from prmloop.loop.tracking import Tracker, metrics_row, resolve_mode, wandb_sync_hint
from prmloop.loop.wandb_files import logged_metrics

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


def _end_process() -> None:
    """Close the W&B files as a process's exit does (wandb-core closes every run file; run.finish() can return a few
    milliseconds before the file's last block is written, so a file read right after it may lack its last rows)."""
    import wandb

    wandb.teardown()


def _metric_counts(out_dir: Path) -> Counter:
    """How often each (round, rl_step, W&B key) occurs over all offline runs under ``out_dir`` (W&B's _ keys aside)."""
    return Counter((row.get("round"), row.get("rl_step"), key) for row in offline_history(out_dir) for key in row
                   if key not in ("round", "rl_step") and not key.startswith("_"))


def test_offline_file_reads_back_what_was_logged(tmp_path: Path, clean_env):
    note = "x" * 40_000  # one record over a 32 KiB block: first, middle and last chunks, block padding
    with Tracker(tmp_path, mode="offline", **ARGS) as tracker:
        tracker.log_eval({"accuracy": 0.25}, rl_step=0, round=1)
        tracker.log_rl({"reward": 0.5, "kl": math.inf, "n": 3, "note": note}, rl_step=1, round=1)
        tracker.log_completions([{"prompt": "1+2=", "completion": "3", "reward": 1.0, "correct": True}], round=1)
    _end_process()
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = [{key: value for key, value in row.items() if not key.startswith("_")} for row in history_rows(path)]
    assert rows[:2] == [{"round": 1, "rl_step": 0, "eval/accuracy": 0.25},
                        {"round": 1, "rl_step": 1, "train/reward": 0.5, "train/kl": math.inf, "train/n": 3,
                         "train/note": note}]
    table = rows[2].pop("samples/completions")
    assert rows[2:] == [{"round": 1}]
    assert table["_type"] == "table-file" and (table["nrows"], table["ncols"]) == (1, 4)
    assert logged_metrics(path) == {(1, 0, "eval/accuracy"), (1, 1, "train/reward"), (1, 1, "train/kl"),
                                    (1, 1, "train/n"), (1, 1, "train/note"), (1, None, "samples/completions")}
    torn = tmp_path / "torn.wandb"  # a writer killed in the middle of the long record
    torn.write_bytes(path.read_bytes()[:20_000])
    assert [row["round"] for row in history_rows(torn)] == [1]  # the eval row, then the read stops
    assert logged_metrics(torn) == {(1, 0, "eval/accuracy")}
    damaged = bytearray(path.read_bytes())
    damaged[20] ^= 0xFF  # inside the first record, which starts after the 7-byte file header
    torn.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="checksum"):
        history_rows(torn)
    with pytest.raises(ValueError, match="damaged record at byte 7"):
        logged_metrics(torn)


def test_resumed_run_sends_wandb_each_metric_once(tmp_path: Path, clean_env):
    def first_round(tracker: Tracker) -> None:
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
        tracker.log_rl({"reward": 0.6}, rl_step=2, round=1)
        tracker.log_eval({"accuracy": 0.3}, rl_step=2, round=1)
        tracker.log_completions([{"prompt": "p", "completion": "c", "reward": 0.5, "correct": False}], round=1)

    with Tracker(tmp_path, mode="offline", run_id="resume-s0", **ARGS) as tracker:
        first_round(tracker)
    _end_process()
    with Tracker(tmp_path, mode="offline", run_id="resume-s0", **ARGS) as tracker:  # the resumed process
        first_round(tracker)  # a stage that runs again logs its rows again
        tracker.log_rl({"reward": 0.6}, rl_step=2, round=1)  # and twice in one process
        tracker.log_rl({"reward": 0.7}, rl_step=3, round=2)
        tracker.log_eval({"accuracy": 0.4}, rl_step=3, round=2)
        tracker.log_completions([{"prompt": "p", "completion": "d", "reward": 0.7, "correct": True}], round=2)
    _end_process()
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-resume-s0.wandb"))) == 2
    counts = _metric_counts(tmp_path)
    assert counts == {(1, 1, "train/reward"): 1, (1, 2, "train/reward"): 1, (1, 2, "eval/accuracy"): 1,
                      (1, None, "samples/completions"): 1, (2, 3, "train/reward"): 1, (2, 3, "eval/accuracy"): 1,
                      (2, None, "samples/completions"): 1}
    rows = read_jsonl_tolerant(tmp_path / "metrics.jsonl")  # as the caller wrote it: repeats kept
    assert [(row["kind"], row["round"], row["rl_step"]) for row in rows] == [
        ("rl", 1, 1), ("rl", 1, 2), ("eval", 1, 2), ("rl", 1, 1), ("rl", 1, 2), ("eval", 1, 2), ("rl", 1, 2),
        ("rl", 2, 3), ("eval", 2, 3)]


KILLED_RUN = """
import os, sys
from prmloop.loop.tracking import Tracker
tracker = Tracker(sys.argv[1], "prmloop-test", "exp", "killed", "process", [], {}, "offline", "killed-s0")
tracker.log_eval({"accuracy": 0.3, "f1": float("nan")}, rl_step=0, round=0)
tracker.log_completions([{"prompt": "p", "completion": "c", "reward": 0.5, "correct": False}], round=0)
tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
os._exit(137)  # as SIGKILL: wandb-core drops whatever it has not written yet
"""


def test_resume_sends_wandb_the_rows_a_killed_process_lost(tmp_path: Path, clean_env):
    # No WANDB_* from this process: its WANDB_SERVICE would attach the child to this process's wandb-core.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env, capture_output=True, check=False)
    assert done.returncode == 137, done.stderr.decode()[-2000:]
    with Tracker(tmp_path, mode="offline", run_id="killed-s0", **ARGS) as tracker:
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)  # the killed stage again (its rows were not cut here)
        tracker.log_rl({"reward": 0.6}, rl_step=2, round=1)
    _end_process()
    counts = _metric_counts(tmp_path)
    assert counts == {(0, 0, "eval/accuracy"): 1, (0, 0, "eval/f1"): 1, (0, None, "samples/completions"): 1,
                      (1, 1, "train/reward"): 1, (1, 2, "train/reward"): 1}
    f1 = [row["eval/f1"] for row in offline_history(tmp_path) if "eval/f1" in row]
    assert f1 == [None] or math.isnan(f1[0])  # resent from metrics.jsonl (null) or kept from the killed run (NaN)


def test_unreadable_earlier_wandb_file_warns_and_sends_everything(tmp_path: Path, clean_env, caplog):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "rl", "round": 1, "rl_step": 0, "reward": 0.1}\n')
    damaged = tmp_path / "wandb" / "offline-run-20250101_000000-broken-s0" / "run-broken-s0.wandb"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a wandb file")
    with caplog.at_level(logging.WARNING, logger="prmloop.loop.tracking"), \
            Tracker(tmp_path, mode="offline", run_id="broken-s0", **ARGS) as tracker:
        assert tracker.wandb_active
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
    _end_process()
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "prmloop.loop.tracking"]
    assert "read-back" in warning and "run-broken-s0.wandb" in warning and "repeated" in warning
    damaged.unlink()
    assert _metric_counts(tmp_path) == {(1, 1, "train/reward"): 1}  # W&B's holdings unknown: no catch-up send
