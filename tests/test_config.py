"""Strict config loading: unknown keys, wrong types, missing files, --set coercion, saving beside outputs."""

import pytest
import yaml

from prmloop.data.errors import UserError
from prmloop.loop.config import ExperimentConfig, load_config, save_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_values(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\nsft:\n  steps: 7\n  lr: 1\n"))
    assert cfg.name == "x" and cfg.sft.steps == 7
    assert cfg.sft.lr == 1.0 and isinstance(cfg.sft.lr, float)  # int accepted for a float field
    assert cfg.data.n_eval == ExperimentConfig().data.n_eval


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "sft:\n  stepz: 7\n")
    with pytest.raises(UserError, match=r"c\.yaml: unknown key 'sft\.stepz'"):
        load_config(path)


def test_wrong_type_names_key_and_file(tmp_path):
    with pytest.raises(UserError, match=r"c\.yaml: key 'sft\.steps' expects int, got str"):
        load_config(write(tmp_path, "sft:\n  steps: many\n"))
    with pytest.raises(UserError, match=r"key 'data' must be a mapping"):
        load_config(write(tmp_path, "data: 3\n"))
    with pytest.raises(UserError, match=r"expects int, got bool"):
        load_config(write(tmp_path, "seed: true\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path, "sft: [\n"))


def test_set_overrides_coerce_types():
    cfg = load_config(None, ["sft.steps=12", "sft.lr=1e-3", "data.operators=+-", "name=123"])
    assert cfg.sft.steps == 12 and cfg.sft.lr == pytest.approx(1e-3)
    assert cfg.data.operators == "+-" and cfg.name == "123"
    for bad, message in [("sft.steps=ten", "expects int"), ("sft.nope=1", "unknown key 'sft.nope'"),
                         ("sft=1", "is a section"), ("sftsteps", "expected KEY=VALUE")]:
        with pytest.raises(UserError, match=message):
            load_config(None, [bad])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["sft.steps=3"])
    path = save_config(cfg, tmp_path / "out")
    assert yaml.safe_load(path.read_text())["sft"]["steps"] == 3
    assert load_config(path) == cfg


@pytest.mark.parametrize("name", ["demo", "quick", "compare", "gsm8k_qwen"])
def test_shipped_configs_load(name):
    load_config(f"configs/{name}.yaml")


def test_demo_config_equals_builtin_defaults():
    demo, defaults = load_config("configs/demo.yaml"), ExperimentConfig()
    for section in ("data", "policy", "sft", "prm", "grpo", "loop", "tracking", "compare"):
        assert getattr(demo, section) == getattr(defaults, section), section


def test_demo_quick_overrides_equal_quick_yaml():
    from prmloop.loop.cli import QUICK_OVERRIDES

    quick, overridden = load_config("configs/quick.yaml"), load_config(None, QUICK_OVERRIDES)
    assert (quick.data, quick.policy, quick.sft) == (overridden.data, overridden.policy, overridden.sft)


def test_set_keeps_text_values_as_typed():
    cfg = load_config(None, ["grpo.mixed_precision=no", "policy.prompt_template='Q: {question}'", "loop.prm_eval_data="])
    assert cfg.grpo.mixed_precision == "no"  # not YAML's False
    assert cfg.policy.prompt_template == "Q: {question}"
    assert cfg.loop.prm_eval_data == ""


def test_a_preset_lies_under_the_file_and_the_set_overrides(tmp_path):
    from prmloop.loop.cli import QUICK_OVERRIDES

    path = tmp_path / "mine.yaml"
    path.write_text("loop:\n  rounds: 5\n")
    cfg = load_config(path, ["grpo.group_size=3"], preset=QUICK_OVERRIDES)
    assert cfg.loop.rounds == 5  # the file wins over the preset's loop.rounds=2
    assert cfg.grpo.group_size == 3  # --set wins over the preset's grpo.group_size=4
    assert cfg.sft.steps == 30 and cfg.loop.eval_k == 4  # the preset fills what the user did not set


def test_resume_refuses_changed_settings_but_allows_tracking(tmp_path):
    from prmloop.loop.config import check_resume, save_config

    cfg = load_config(None)
    save_config(cfg, tmp_path)
    check_resume(cfg, tmp_path)  # same settings: fine
    check_resume(load_config(None, ["tracking.mode=disabled", "loop.cache_dir=/elsewhere"]), tmp_path)
    with pytest.raises(UserError, match=r"--resume with settings that differ .*grpo.lr 5e-05 -> 0.5.*loop.rounds 2 -> 3"):
        check_resume(load_config(None, ["grpo.lr=0.5", "loop.rounds=3"]), tmp_path)
    check_resume(cfg, tmp_path / "fresh")  # nothing saved yet: nothing to compare
