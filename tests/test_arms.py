"""Tests for loop/arms.py: arm specs parse strictly and land in the right config sections."""

import pytest

from prmloop.data.errors import UserError
from prmloop.loop.arms import Arm, arm_config, parse_arm
from prmloop.loop.config import ExperimentConfig


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
