"""Tests for loop/ledger.py: committed stages survive, uncommitted rows are cut on restore, dirs appear whole."""

import json

import pytest

from prmloop.loop.ledger import Ledger, save_dir_atomically
from prmloop.utils.errors import UserError


def test_restore_cuts_rows_written_after_the_last_commit(tmp_path):
    ledger = Ledger(tmp_path, ["rows.jsonl"])
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n')
    ledger.commit("stage1")
    with rows.open("a") as handle:
        handle.write('{"a": 2}\n{"a": 3')  # an unfinished stage: one whole row and one torn row
    again = Ledger(tmp_path, ["rows.jsonl"])  # what a resumed process sees
    assert again.done("stage1") and not again.done("stage2")
    assert again.restore() == {"rows.jsonl": len('{"a": 2}\n{"a": 3')}
    assert rows.read_text() == '{"a": 1}\n'


def test_commit_records_info_and_is_idempotent(tmp_path):
    ledger = Ledger(tmp_path, [])
    ledger.commit("a", policy_round=1)
    ledger.commit("a", policy_round=2)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed"] == ["a"]
    assert Ledger(tmp_path, []).info == {"policy_round": 2}


def test_corrupt_state_is_one_line_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="state.json: not a valid run state file"):
        Ledger(tmp_path, [])


def test_save_dir_atomically_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "ckpt"

    def save(version):
        def write(directory):
            (directory / "weights.txt").write_text(version)
        return write

    save_dir_atomically(target, save("v1"))
    assert (target / "weights.txt").read_text() == "v1"

    def crash(directory):
        (directory / "weights.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        save_dir_atomically(target, crash)
    assert (target / "weights.txt").read_text() == "v1"  # the old checkpoint is untouched
    save_dir_atomically(target, save("v2"))
    assert (target / "weights.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.tmp", "ckpt"] or sorted(
        p.name for p in tmp_path.iterdir()) == ["ckpt"]
