"""The CLI: data generate is byte-identical per seed, data show is readable, user errors are one line with exit 2."""

import os
import subprocess
import sys

import pytest

from prmloop.loop.cli import main


def test_generate_is_deterministic_and_show_prints_steps(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["data", "generate", "--task", "arith", "--n", "20", "--seed", "3", "--out", str(first)]) == 0
    assert main(["data", "generate", "--task", "arith", "--n", "20", "--seed", "3", "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert len(first.read_text().splitlines()) == 20
    capsys.readouterr()
    assert main(["data", "show", str(first), "--n", "2"]) == 0
    shown = capsys.readouterr().out
    assert "Answer:" in shown and "[ok ]" in shown and "[3]" not in shown


def test_user_errors_are_one_line_exit_2(tmp_path):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("sft:\n  stepz: 1\n")
    cases = [
        ["data", "show", str(tmp_path / "missing.jsonl")],
        ["policy", "init", "--out", str(tmp_path / "p"), "--config", str(bad_config)],
        ["policy", "init", "--out", str(tmp_path / "p"), "--set", "sft.steps=abc"],
        ["data", "generate", "--n", "5", "--out", str(tmp_path / "x.jsonl"), "--set", "data.operators=/"],
    ]
    for argv in cases:
        result = subprocess.run([sys.executable, "-m", "prmloop.loop.cli", *argv], capture_output=True, text=True, check=False)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("prmloop: error:"), result.stderr


def test_policy_sft_quick_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["policy", "sft", "--config", "configs/quick.yaml", "--out", str(out)]) == 0
    assert (out / "model.safetensors").exists() and (out / "config.yaml").exists()
    assert (out / "sft_metrics.json").exists()
    assert "held-out greedy accuracy" in capsys.readouterr().out


def test_convert_writes_stepwise_and_names_bad_rows(tmp_path, capsys):
    source = tmp_path / "src.jsonl"
    source.write_text(
        '{"prompt": "1 + 1 = ?", "completions": ["1 + 1 = 2", "Answer: 2"], "labels": [0.75, true]}\n'
        '{"prompt": "2 + 2 = ?", "completions": ["2 + 2 = 4"], "labels": [0.5, 0.5]}\n'
    )
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", "--format", "trl_stepwise", "--source", str(source), "--out", str(out)]) == 2
    assert "src.jsonl:2" in capsys.readouterr().err and not out.exists()
    argv = ["data", "convert", "--format", "trl_stepwise", "--source", str(source), "--out", str(out), "--skip-bad"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 rows" in printed and "skipped 1" in printed
    assert '"labels": [0.75, true]' in out.read_text()


def test_every_command_takes_config_and_set():
    import argparse

    from prmloop.loop.cli import build_parser

    def leaves(parser, path):
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            yield path, parser
            return
        for name, sub in actions[0].choices.items():
            yield from leaves(sub, [*path, name])

    found = list(leaves(build_parser(), []))
    assert len(found) >= 12
    for path, parser in found:
        options = {option for action in parser._actions for option in action.option_strings}
        assert {"--config", "--set"} <= options, " ".join(path)


def test_output_path_mistakes_are_one_line(tmp_path, capsys):
    from prmloop.loop.cli import main

    plain = tmp_path / "plain"
    plain.write_text("a file")
    code = main(["data", "generate", "--n", "2", "--out", str(plain / "x.jsonl")])  # parent is a plain file
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "plain" in err[0], err
    code = main(["policy", "init", "--out", str(plain / "policy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user")
        code = main(["data", "generate", "--n", "2", "--out", str(locked / "x.jsonl")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "ro" in err[0], err
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("argv", [["loop", "--config", "configs/quick.yaml"], ["demo", "--quick"],
                                  ["prm", "label", "--policy", "p", "--out", "x.jsonl"], ["data", "generate", "--n", "2",
                                                                                         "--out", "x.jsonl"]])
def test_one_process_commands_refuse_several_processes_in_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    command = " ".join(argv[:2]) if argv[0] in ("prm", "data") else argv[0]
    assert err == (f"prmloop: error: {command}: runs in one process, and accelerate launch started 2; launch it "
                   "without accelerate (only grpo and prm train split their work over processes)")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_grpo_and_prm_train_pass_the_process_check(monkeypatch):
    from types import SimpleNamespace

    from prmloop.loop.cli import check_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    check_processes(SimpleNamespace(command="grpo"))
    check_processes(SimpleNamespace(command="prm", action="train"))
