"""Strict config loading: unknown keys, wrong types, missing files, --set coercion, saving beside outputs."""

from pathlib import Path

import pytest
import yaml

from prmloop.loop.config import ExperimentConfig, load_config, save_config
from prmloop.utils.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
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
    with pytest.raises(UserError, match=r"c.yaml:2: expected the node content"):
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


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(str(path))


def test_demo_reads_the_shipped_demo_yaml():
    from prmloop.loop.cli import DEMO_CONFIG

    demo, preset = load_config("configs/demo.yaml"), load_config(None, preset=DEMO_CONFIG)
    assert DEMO_CONFIG.resolve() == Path("configs/demo.yaml").resolve()
    for section in ("data", "policy", "sft", "prm", "grpo", "loop", "tracking", "compare"):
        assert getattr(demo, section) == getattr(preset, section), section
    # the file spells out the built-in values it keeps, so it stays true to the defaults too
    defaults = ExperimentConfig()
    assert demo.prm == defaults.prm and demo.policy.hidden_size == defaults.policy.hidden_size
    # the demo is the full study's regime and warm start, cut to two rounds, three arms and two seeds: outcome,
    # process with a fixed PRM and process with the iteratively retrained one, so both comparisons show
    assert demo.compare.arms == ["outcome-rule-fixed", "process-prm-fixed", "process-prm-iterative"]
    assert demo.compare.seeds == 2 and demo.loop.rounds == 2
    study = load_config("configs/compare.yaml")
    assert (demo.data.min_steps, demo.data.max_steps, demo.data.slip_rate, demo.data.slip_borrow) == (
        study.data.min_steps, study.data.max_steps, study.data.slip_rate, study.data.slip_borrow)
    assert (demo.policy, demo.sft.steps) == (study.policy, study.sft.steps)
    keys = ("prompts_per_step", "group_size", "lr", "beta")  # (outcome_mix is the study's '-mix' arm's only)
    assert [getattr(demo.grpo, k) for k in keys] == [getattr(study.grpo, k) for k in keys]


def test_demo_quick_preset_is_quick_yaml_without_its_name():
    from prmloop.loop.cli import QUICK_CONFIG

    quick, preset = load_config("configs/quick.yaml"), load_config(None, preset=QUICK_CONFIG)
    assert preset.name == ExperimentConfig().name  # the run's name is not the preset's
    preset.name = quick.name
    assert preset == quick


def test_set_keeps_text_values_as_typed():
    cfg = load_config(None, ["grpo.mixed_precision=no", "policy.prompt_template='Q: {question}'", "loop.prm_eval_data="])
    assert cfg.grpo.mixed_precision == "no"  # not YAML's False
    assert cfg.policy.prompt_template == "Q: {question}"
    assert cfg.loop.prm_eval_data == ""


def test_a_preset_lies_under_the_file_and_the_set_overrides(tmp_path):
    from prmloop.loop.cli import QUICK_CONFIG

    path = tmp_path / "mine.yaml"
    path.write_text("loop:\n  rounds: 5\nsft:\n")
    cfg = load_config(path, ["grpo.group_size=3"], preset=QUICK_CONFIG)
    assert cfg.loop.rounds == 5  # the file wins over the preset's loop.rounds=2
    assert cfg.grpo.group_size == 3  # --set wins over the preset's grpo.group_size=4
    assert cfg.sft.steps == 30 and cfg.loop.eval_k == 4  # the preset fills what the user did not set
    assert cfg.loop.rl_steps_per_round == 2  # and the keys of a section the file names but leaves (partly) empty


def test_resume_refuses_changed_settings_but_allows_tracking(tmp_path):
    from prmloop.loop.config import check_resume, save_config

    cfg = load_config(None)
    save_config(cfg, tmp_path)
    check_resume(cfg, tmp_path)  # same settings: fine
    check_resume(load_config(None, ["tracking.mode=disabled", "loop.cache_dir=/elsewhere"]), tmp_path)
    with pytest.raises(UserError, match=r"--resume with settings that differ .*grpo.lr 5e-05 -> 0.5.*loop.rounds 2 -> 3"):
        check_resume(load_config(None, ["grpo.lr=0.5", "loop.rounds=3"]), tmp_path)
    check_resume(cfg, tmp_path / "fresh")  # nothing saved yet: nothing to compare


@pytest.mark.parametrize(("override", "message"), [
    ("grpo.lr=-1", r"grpo.lr = -1.0: must be a finite number > 0"),
    ("grpo.lr=nan", r"grpo.lr = nan: must be a finite number > 0"),
    ("grpo.lr=inf", r"grpo.lr = inf: must be a finite number > 0"),
    ("sft.steps=-5", r"sft.steps = -5: must be a finite number >= 0"),
    ("sft.batch_size=0", r"sft.batch_size = 0: must be a finite number >= 1"),
    ("policy.num_heads=3", r"policy.num_heads = 3: must divide policy.hidden_size \(128\)"),
    ("loop.eval_k=0", r"loop.eval_k = 0: must be"),
    ("data.n_eval=0", r"data.n_eval = 0: must be"),
    ("policy.max_new_tokens=0", r"policy.max_new_tokens = 0: must be"),
    ("grpo.mixed_precision=fp8", r"grpo.mixed_precision = 'fp8': must be one of no, bf16, fp16"),
    ("grpo.mixed_precision=bf16", r"prm.mixed_precision = no and grpo.mixed_precision = bf16: must agree"),
    ("grpo.long_prompts=cut", r"grpo.long_prompts = 'cut': must be one of drop, truncate, error"),
    ("grpo.vllm_is_cap=0.5", r"grpo.vllm_is_cap = 0.5: must be 0 \(off\) or a finite number >= 1"),
    ("grpo.vllm_engine_args='[1]'", r"grpo.vllm_engine_args: must be a JSON object"),
    ("loop.rounds=-1", r"loop.rounds = -1: must be"),
    ("policy.dtype=float8", r"policy.dtype = 'float8': must be one of float32, bfloat16, float16"),
    ("prm.mode=foo", r"prm.mode = 'foo': must be one of process, outcome"),
    ("grpo.top_p=0", r"grpo.top_p = 0.0: must be a number in \(0, 1\]"),
    ("grpo.top_p=2", r"grpo.top_p = 2.0: must be a number in \(0, 1\]"),
    ("grpo.clip_eps=-1", r"grpo.clip_eps = -1.0: must be"),
    ("grpo.beta=-1", r"grpo.beta = -1.0: must be"),
    ("grpo.outcome_mix=-5", r"grpo.outcome_mix = -5.0: must be"),
    ("grpo.group_size=1", r"grpo.group_size = 1: must be a finite number >= 2"),
    ("compare.arms=outcome-rule-fixed-min", r"min-form credit .* needs process supervision"),
    ("policy.max_new_tokens=160", r"policy.max_new_tokens = 160: must be below policy.max_length \(160\)"),
])
def test_values_out_of_range_are_refused_before_any_work(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_yaml_aliases_duplicates_and_non_text_are_one_line(tmp_path):
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(UserError, match=r"bomb.yaml:2: YAML aliases \(\*name\) are not allowed"):
        load_config(write(tmp_path, bomb, "bomb.yaml"))
    with pytest.raises(UserError, match=r"dup.yaml:3: duplicate key 'steps'"):
        load_config(write(tmp_path, "sft:\n  steps: 1\n  steps: 2\n", "dup.yaml"))
    (tmp_path / "bin.yaml").write_bytes(b"sft:\n  steps: \xff\xfe\n")
    with pytest.raises(UserError, match=r"bin.yaml: not UTF-8 text"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(UserError, match=r"a directory, not a file"):
        load_config(tmp_path)
    long_value = "x" * 5000
    with pytest.raises(UserError) as err:
        load_config(None, [f"prm.mode={long_value}"])
    assert len(str(err.value)) < 400
