"""Tests for data/jsonl.py's append-only log: appends, a torn last line (skipped, then truncated), mid-file damage."""

import json
from pathlib import Path

import pytest

from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import append_jsonl, read_jsonl, read_jsonl_tolerant, truncate_torn_tail


def test_append_creates_then_appends_whole_lines(tmp_path: Path):
    path = tmp_path / "sub" / "metrics.jsonl"
    assert append_jsonl(path, [{"a": 1}, {"a": 2}]) == 2
    assert append_jsonl(path, [{"a": 3}]) == 1
    assert append_jsonl(path, []) == 0
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 3
    assert [row["a"] for row in read_jsonl_tolerant(path)] == [1, 2, 3]
    assert [row for _, row in read_jsonl(path)] == read_jsonl_tolerant(path)  # same rows as the strict reader


def test_torn_tail_is_skipped_then_truncated(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": 0}, {"step": 1}])
    good_size = path.stat().st_size
    torn = json.dumps({"step": 2, "reward": 0.5}).encode()[:9]  # a writer killed mid-line: b'{"step": '
    with path.open("ab") as handle:
        handle.write(torn)
    assert [row["step"] for row in read_jsonl_tolerant(path)] == [0, 1]
    with pytest.raises(UserError, match="torn"):  # appending now would glue a row onto the torn bytes
        append_jsonl(path, [{"step": 2}])
    assert truncate_torn_tail(path) == len(torn)
    assert path.stat().st_size == good_size
    assert truncate_torn_tail(path) == 0  # idempotent
    append_jsonl(path, [{"step": 2}])
    assert [row["step"] for row in read_jsonl_tolerant(path)] == [0, 1, 2]


def test_torn_tail_with_a_cut_multibyte_character(tmp_path: Path):
    path = tmp_path / "completions.jsonl"
    append_jsonl(path, [{"text": "ok"}])
    with path.open("ab") as handle:
        handle.write('{"text": "π'.encode()[:-1])  # half of the 2-byte UTF-8 'π': not even decodable
    assert read_jsonl_tolerant(path) == [{"text": "ok"}]
    assert truncate_torn_tail(path) == len('{"text": "π'.encode()) - 1


def test_complete_row_missing_only_its_newline_is_kept(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0}\n{"step": 1}')  # the last write lost only its "\n"
    assert [row["step"] for row in read_jsonl_tolerant(path)] == [0, 1]
    assert truncate_torn_tail(path) == 0
    assert path.read_bytes() == b'{"step": 0}\n{"step": 1}\n'  # newline restored, row kept
    assert [row["step"] for row in read_jsonl_tolerant(path)] == [0, 1]


def test_mid_file_garbage_names_file_and_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0}\n\n{"step": \n{"step": 2}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl:3:"):  # blank line 2 is skipped but still counted
        read_jsonl_tolerant(path)


def test_terminated_bad_last_line_is_damage_not_a_torn_tail(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0}\n[1, 2]\n')  # ends in a newline, so no writer was cut off: a real error
    with pytest.raises(UserError, match=r"metrics\.jsonl:2:"):
        read_jsonl_tolerant(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        read_jsonl_tolerant(tmp_path / "absent.jsonl")
    assert truncate_torn_tail(tmp_path / "absent.jsonl") == 0
    assert not (tmp_path / "absent.jsonl").exists()


def test_replace_dir_survives_leftovers_and_a_kill_between_its_renames(tmp_path):
    from prmloop.utils.jsonl import recover_dir, replace_dir

    target = tmp_path / "ckpt"
    for version in ("1", "2"):
        staging = tmp_path / f"stage{version}"
        staging.mkdir()
        (staging / "v").write_text(version)
        (tmp_path / ".ckpt.old").mkdir(exist_ok=True)  # a leftover from an earlier killed swap
        (tmp_path / ".ckpt.old" / "junk").write_text("x")
        replace_dir(staging, target)
        assert (target / "v").read_text() == version and not (tmp_path / ".ckpt.old").exists()
    # A kill between the renames leaves only the old copy aside: recover_dir puts it back.
    target.rename(tmp_path / ".ckpt.old")
    recover_dir(target)
    assert (target / "v").read_text() == "2" and not (tmp_path / ".ckpt.old").exists()
    recover_dir(target)  # nothing to do
    assert (target / "v").read_text() == "2"
