"""`prmloop COMMAND --help` lists the config keys the command reads, with defaults and the field docstrings read from
the source at run time; `prmloop config show` prints the resolved YAML a run saves, and it loads back."""

import dataclasses
import re
import subprocess
import sys

import pytest
import yaml

from prmloop.loop.cli import CONFIG_KEYS_READ, _leaf_parsers, build_parser, main
from prmloop.loop.config import ExperimentConfig, load_config
from prmloop.loop.config_docs import config_keys, field_docs, keys_help, selected, shown_default


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@dataclasses.dataclass
class _Inner:
    rate: float = 0.5
    """How fast, as a fraction."""
    undocumented: int = 3
    text: str = "\n"
    """A docstring written over
    two lines."""


@dataclasses.dataclass
class _Root:
    seed: int = 1
    """Top-level seed."""
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    """The inner section."""


def test_field_docstrings_are_read_from_the_source():
    assert field_docs(_Inner) == {"rate": "How fast, as a fraction.", "text": "A docstring written over two lines."}
    keys = config_keys(_Root())
    assert [(k.key, k.default, k.doc) for k in keys] == [
        ("seed", 1, "Top-level seed."), ("inner.rate", 0.5, "How fast, as a fraction."),
        ("inner.undocumented", 3, ""), ("inner.text", "\n", "A docstring written over two lines.")]
    listing = keys_help(_Root(), ("*",), width=60)
    assert "top level\n  seed = 1\n      Top-level seed." in listing
    assert "inner: The inner section.\n  inner.rate = 0.5\n" in listing
    assert '  inner.text = "\\n"\n      A docstring written over two lines.' in listing  # '\n' shown, not printed
    assert shown_default(True) == "true" and shown_default("") == '""' and shown_default(["a"]) == '["a"]'


def test_every_config_field_has_a_docstring():
    missing = [key.key for key in config_keys(ExperimentConfig()) if not key.doc]
    assert not missing, f"fields without a docstring under them (STYLE.md rule 4): {missing}"


def test_the_mapping_names_every_command_and_only_real_keys():
    commands = {path for path, _ in _leaf_parsers(build_parser())}
    assert set(CONFIG_KEYS_READ) == commands
    keys = config_keys(ExperimentConfig())
    for command, patterns in CONFIG_KEYS_READ.items():
        for pattern in patterns:
            assert selected(keys, (pattern,)), f"{command}: {pattern!r} matches no config key"


def test_grpo_help_lists_its_sections_with_defaults_and_docstrings(capsys):
    text = help_text(["grpo"], capsys)
    assert "--policy POLICY" in text  # argparse's own part stays
    defaults = ExperimentConfig()
    for section in ("data", "policy", "prm", "grpo", "tracking"):
        assert f"\n{section}: " in text  # headed by the section's docstring
        assert f"{section}: {field_docs(ExperimentConfig)[section]}" in " ".join(text.split())
        instance = getattr(defaults, section)
        docs = field_docs(type(instance))
        for field in dataclasses.fields(instance):  # every field, read at run time: new fields show up by themselves
            line = f"  {section}.{field.name} = {shown_default(getattr(instance, field.name))}\n"
            assert line in text
            block = re.split(r"\n(?! {6})", text.split(line, 1)[1], maxsplit=1)[0]  # the docstring, wrapped under it
            assert " ".join(block.split()) == docs[field.name]
    assert "  grpo.lr = 5e-05\n      AdamW learning rate" in text  # a literal reading of one default
    for unread in ("sft.steps", "loop.rounds", "compare.arms"):
        assert f"  {unread} = " not in text


@pytest.mark.parametrize("command", sorted(CONFIG_KEYS_READ))
def test_every_help_is_wrapped_and_lists_exactly_its_keys(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = help_text(command.split(), capsys)
    assert max(len(line) for line in text.splitlines()) <= 100
    listed = {line.split(" = ")[0].strip() for line in text.splitlines() if line.startswith("  ") and " = " in line
              and not line.startswith("   ")}
    expected = {key.key for key in selected(config_keys(ExperimentConfig()), CONFIG_KEYS_READ[command])}
    assert listed == expected


def test_top_level_help_points_at_the_listing(capsys):
    text = help_text([], capsys)
    assert "config show" in text and "COMMAND --help" in text


def show(argv, capsys):
    code = main(["config", "show", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_config_show_prints_the_resolved_yaml_and_it_loads_back(tmp_path, capsys):
    code, text, _ = show(["--config", "configs/quick.yaml", "--set", "grpo.lr=1e-3", "--set", "prm.step_separator=ки"],
                         capsys)
    assert code == 0
    values = yaml.safe_load(text)
    assert values["grpo"]["lr"] == 0.001 and values["prm"]["step_separator"] == "ки"
    assert set(values) == {f.name for f in dataclasses.fields(ExperimentConfig)}  # every section, resolved
    saved = tmp_path / "shown.yaml"
    saved.write_text(text, encoding="utf-8")
    assert load_config(saved) == load_config("configs/quick.yaml", ["grpo.lr=1e-3", "prm.step_separator=ки"])
    assert show(["--config", str(saved)], capsys)[1] == text  # a fixed point: show of the shown config is itself


def test_config_show_equals_the_config_yaml_a_run_saves(tmp_path, capsys):
    args = ["--config", "configs/quick.yaml", "--set", "policy.hidden_size=16", "--set", ("policy.prompt_template=Q: {"
            "question}\n")]
    assert main(["policy", "init", "--out", str(tmp_path / "p"), *args]) == 0
    capsys.readouterr()
    assert show(args, capsys)[1] == (tmp_path / "p" / "config.yaml").read_text()


def test_config_show_of_the_defaults_round_trips(tmp_path, capsys):
    code, text, _ = show([], capsys)
    assert code == 0
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    assert load_config(tmp_path / "c.yaml") == ExperimentConfig()


@pytest.mark.parametrize("argv, message", [
    (["--config", "absent.yaml"], "absent.yaml: config file not found"),
    (["--config", "bad.yaml"], "bad.yaml: unknown key 'grpo.lrr'"),
    (["--config", "broken.yaml"], "broken.yaml:3: expected the node content"),
    (["--set", "grpo.nope=1"], "--set: unknown key 'grpo.nope'"),
    (["--set", "grpo.lr=fast"], "key 'grpo.lr' expects float"),
    (["--set", "grpo.group_size=1"], "grpo.group_size"),
])
def test_config_show_errors_are_one_line_exit_2(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("grpo:\n  lrr: 1\n")
    (tmp_path / "broken.yaml").write_text("grpo:\n  lr: [\n")
    done = subprocess.run([sys.executable, "-m", "prmloop", "config", "show", *argv], capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert len(lines) == 1 and lines[0].startswith("prmloop: error:") and message in lines[0], done.stderr
