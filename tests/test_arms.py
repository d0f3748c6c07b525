"""Tests for loop/arms.py: arm specs parse strictly and land in the right config sections."""

import pytest

from prmloop.loop.arms import Arm, arm_config, arm_from_config, parse_arm
from prmloop.loop.config import ExperimentConfig, load_config
from prmloop.utils.errors import UserError


def test_parse_arm_defaults_credit_to_sum():
    assert parse_arm("process-prm-iterative") == Arm("process", "prm", "iterative", "sum")
    assert parse_arm("process-prm-fixed-min").name == "process-prm-fixed-min"
    assert parse_arm("outcome-rule-fixed").uses_reward_model is False
    assert parse_arm("outcome-orm-iterative").reward_model_mode == "outcome"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("process-prm", "must look like"),
        ("proces-prm-fixed", "supervision 'proces'"),
        ("outcome-rule-sometimes", "reward-model update 'sometimes'"),
        ("process-rule-fixed", "process supervision needs step rewards"),
        ("process-prm-fixed-max", "credit 'max'"),
    ],
)
def test_bad_arm_specs_name_the_part(spec, message):
    with pytest.raises(UserError, match=message):
        parse_arm(spec)
    with pytest.raises(UserError, match=r"'outcome-rule-fixed-min': min-form credit .* needs process supervision"):
        parse_arm("outcome-rule-fixed-min")


def test_arm_config_sets_sections_without_touching_the_original():
    cfg = ExperimentConfig()
    out = arm_config(cfg, parse_arm("process-prm-fixed-min"), seed=3)
    assert (out.grpo.supervision, out.grpo.reward_source, out.grpo.credit) == ("process", "prm", "min")
    assert (out.loop.rm_update, out.seed, out.grpo.seed) == ("fixed", 3, 3)
    assert cfg.seed == 0 and cfg.loop.rm_update == "iterative"


def test_mix_arms_carry_the_outcome_mix_and_others_run_without_it():
    mixed = parse_arm("process-prm-iterative-mix")
    assert mixed == Arm("process", "prm", "iterative", "sum", mix=True) and mixed.name == "process-prm-iterative-mix"
    assert parse_arm("process-prm-fixed-min-mix").name == "process-prm-fixed-min-mix"
    cfg = ExperimentConfig()
    cfg.grpo.outcome_mix = 0.5
    assert arm_config(cfg, mixed, seed=0).grpo.outcome_mix == 0.5
    assert arm_config(cfg, parse_arm("process-prm-iterative"), seed=0).grpo.outcome_mix == 0.0
    with pytest.raises(UserError, match=r"'outcome-rule-fixed-mix': '-mix' adds the rule reward"):
        parse_arm("outcome-rule-fixed-mix")
    with pytest.raises(UserError, match="reward-model update 'mix'"):
        parse_arm("process-prm-mix")


def test_a_mix_arm_without_a_weight_is_refused_up_front():
    with pytest.raises(UserError, match=r"compare.arms: 'process-prm-iterative-mix' mixes in .* grpo.outcome_mix, "
                                        r"which is 0; set it"):
        load_config(None, ["compare.arms=[process-prm-iterative-mix]"])
    assert load_config(None, ["compare.arms=[process-prm-iterative-mix]", "grpo.outcome_mix=0.5"]).grpo.outcome_mix == 0.5


def test_implicit_arms_learn_online_and_need_process_supervision():
    arm = parse_arm("process-implicit-online-min-mix")
    assert (arm.reward_source, arm.rm_update, arm.credit, arm.mix) == ("implicit", "online", "min", True)
    assert arm.name == "process-implicit-online-min-mix" and arm.uses_reward_model is False  # no prm0, no labels
    for spec, message in (("process-implicit-iterative", "only it, is updated 'online'"),
                          ("process-prm-online", "only it, is updated 'online'"),
                          ("outcome-implicit-online", "it needs process supervision")):
        with pytest.raises(UserError, match=message):
            parse_arm(spec)
    out = arm_config(ExperimentConfig(), arm, seed=1)
    assert (out.grpo.reward_source, out.grpo.credit, out.loop.rm_update) == ("implicit", "min", "iterative")
    # `prmloop loop` with an implicit reward source runs the online arm whatever loop.rm_update says
    cfg = load_config(None, ["grpo.reward_source=implicit", "loop.rm_update=fixed"])
    assert arm_from_config(cfg).name == "process-implicit-online"
