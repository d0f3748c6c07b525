"""Tests for loop/tracking.py: metrics.jsonl rows, NaN -> null, mode resolution, W&B offline files, W&B failure, and
a resumed W&B run (same id, wandb's own resume) holding each metric at most once at steps that keep growing: checked
against our record (wandb_logged.jsonl) and the offline run files, read with the test-only tests/wandb_records.py."""

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

from prmloop.loop.tracking import (
    RECORD_FILE,
    Tracker,
    check_online_login,
    metrics_row,
    question_panels,
    resolve_mode,
    wandb_sync_hint,
)
from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import read_jsonl_tolerant

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
    with pytest.raises(UserError, match=r"^tracking.mode: 'dryrun' is not one of offline, online, disabled$"):
        resolve_mode("dryrun", {})


def test_online_without_credentials_is_one_line_naming_tracking_mode(tmp_path: Path, clean_env, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "no-config"))
    with pytest.raises(UserError, match=r"^tracking.mode: 'online' needs W&B credentials") as caught:
        check_online_login("online")
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="tracking.mode"):
        Tracker(tmp_path / "run", mode="online", **ARGS)
    check_online_login("offline")  # no check: offline needs no login


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


def _steps(out_dir: Path) -> list[int]:
    """W&B's _step of every history row, the runs' files in start order (name order: they start with a timestamp)."""
    return [row["_step"] for row in offline_history(out_dir)]


def _record(out_dir: Path) -> list[dict]:
    return read_jsonl_tolerant(out_dir / RECORD_FILE)


def test_offline_file_reads_back_what_was_logged(tmp_path: Path, clean_env):
    note = "x" * 40_000  # one record over a 32 KiB block: first, middle and last chunks, block padding
    with Tracker(tmp_path, mode="offline", **ARGS) as tracker:
        tracker.log_eval({"accuracy": 0.25}, rl_step=0, round=1)
        tracker.log_rl({"reward": 0.5, "kl": math.inf, "n": 3, "note": note}, rl_step=1, round=1)
        tracker.log_completions([{"prompt": "1+2=", "completion": "3", "reward": 1.0, "correct": True}], round=1)
    _end_process()
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = [{key: value for key, value in row.items() if not key.startswith("_")} for row in history_rows(path)]
    assert rows[:2] == [{"round": 1, "rl_step": 0, "eval/accuracy": 0.25, "q1_process_vs_outcome/accuracy": 0.25},
                        {"round": 1, "rl_step": 1, "train/reward": 0.5, "train/kl": math.inf, "train/n": 3,
                         "train/note": note}]
    table = rows[2].pop("samples/completions")
    assert rows[2:] == [{"round": 1}]
    assert table["_type"] == "table-file" and (table["nrows"], table["ncols"]) == (1, 4)
    torn = tmp_path / "torn.wandb"  # a writer killed in the middle of the long record
    torn.write_bytes(path.read_bytes()[:20_000])
    assert [row["round"] for row in history_rows(torn)] == [1]  # the eval row, then the read stops
    damaged = bytearray(path.read_bytes())
    damaged[20] ^= 0xFF  # inside the first record, which starts after the 7-byte file header
    torn.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="checksum"):
        history_rows(torn)


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
                      (1, 2, "q1_process_vs_outcome/accuracy"): 1, (1, None, "samples/completions"): 1,
                      (2, 3, "train/reward"): 1, (2, 3, "eval/accuracy"): 1, (2, 3, "q1_process_vs_outcome/accuracy"): 1,
                      (2, None, "samples/completions"): 1}
    assert _steps(tmp_path) == list(range(7))  # explicit steps, continued by the resumed process
    record = _record(tmp_path)  # our own record of what went to W&B: the same 7 calls, one run id
    assert [line["step"] for line in record] == list(range(7)) and {line["run_id"] for line in record} == {"resume-s0"}
    assert record[3] == {"run_id": "resume-s0", "step": 3, "at": {"round": 1}, "keys": ["samples/completions"]}
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


def test_resume_after_a_kill_logs_nothing_twice_and_continues_the_steps(tmp_path: Path, clean_env):
    # No WANDB_* from this process: its WANDB_SERVICE would attach the child to this process's wandb-core.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env, capture_output=True, check=False)
    assert done.returncode == 137, done.stderr.decode()[-2000:]
    assert [line["step"] for line in _record(tmp_path)] == [0, 1, 2]  # what the killed process handed to W&B
    with Tracker(tmp_path, mode="offline", run_id="killed-s0", **ARGS) as tracker:
        assert tracker.run_id == "killed-s0"
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)  # the killed stage again: already handed over, skipped
        tracker.log_rl({"reward": 0.6}, rl_step=2, round=1)
    _end_process()
    record = _record(tmp_path)
    assert [(line["step"], line["at"], line["keys"]) for line in record] == [
        (0, {"round": 0, "rl_step": 0}, ["eval/accuracy", "eval/f1", "q1_process_vs_outcome/accuracy"]),
        (1, {"round": 0}, ["samples/completions"]),
        (2, {"round": 1, "rl_step": 1}, ["train/reward"]), (3, {"round": 1, "rl_step": 2}, ["train/reward"])]
    counts = _metric_counts(tmp_path)
    assert set(counts.values()) == {1} and counts[(1, 2, "train/reward")] == 1  # at most once; the new row once
    # wandb had not written the killed process's rows (it writes 32 KiB blocks): lost to W&B, kept in metrics.jsonl
    assert set(counts) <= {(0, 0, "eval/accuracy"), (0, 0, "eval/f1"), (0, 0, "q1_process_vs_outcome/accuracy"),
                           (0, None, "samples/completions"),
                           (1, 1, "train/reward"), (1, 2, "train/reward")}
    assert _steps(tmp_path)[-1] == 3  # the resumed process's row sits after every step the killed one used
    rows = read_jsonl_tolerant(tmp_path / "metrics.jsonl")
    assert [(row["kind"], row["rl_step"]) for row in rows] == [("eval", 0), ("rl", 1), ("rl", 1), ("rl", 2)]


def test_record_of_another_run_id_or_a_torn_line_is_ignored(tmp_path: Path, clean_env):
    (tmp_path / RECORD_FILE).write_text(
        '{"run_id": "other-s0", "step": 41, "at": {"round": 1, "rl_step": 1}, "keys": ["train/reward"]}\n'
        '{"run_id": "mine-s0", "st')  # a process killed mid-append
    with Tracker(tmp_path, mode="offline", run_id="mine-s0", **ARGS) as tracker:
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
    _end_process()
    assert _metric_counts(tmp_path) == {(1, 1, "train/reward"): 1} and _steps(tmp_path) == [0]
    assert [line["run_id"] for line in _record(tmp_path)] == ["other-s0", "mine-s0"]


def test_rows_logged_while_wandb_was_off_are_sent_once_on_resume(tmp_path: Path, clean_env):
    with Tracker(tmp_path, mode="disabled", run_id="late-s0", **ARGS) as tracker:
        tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
        tracker.log_completions([{"prompt": "p", "completion": "c", "reward": 0.5, "correct": False}], round=1)
    assert not (tmp_path / RECORD_FILE).exists() and not (tmp_path / "wandb").exists()
    for _ in range(2):  # the second resume sends nothing again
        with Tracker(tmp_path, mode="offline", run_id="late-s0", **ARGS) as tracker:
            tracker.log_rl({"reward": 0.5}, rl_step=1, round=1)
        _end_process()
    assert _metric_counts(tmp_path) == {(1, 1, "train/reward"): 1, (1, None, "samples/completions"): 1}


def test_question_panels_copy_each_questions_metrics_into_its_own_section():
    row = {"accuracy": 0.5, "band_prm_first_error_f1": 0.75, "tokens_total": 1200.0, "maj_at_2": 0.5}
    assert question_panels(row) == {"q1_process_vs_outcome/accuracy": 0.5,
                                    "q2_iterative_vs_fixed/band_prm_first_error_f1": 0.75,
                                    "q4_compute/tokens_total": 1200.0}  # maj@2 answers no question: eval/ only
