"""LoRA GRPO (policy.lora): only adapters train, π_ref is the base with adapters disabled (no second model) until a
reset copies the adapters, checkpoints hold adapters only and resume exactly, the export is a merged plain model."""

import pytest
import torch
from test_grpo import ARITH, PROBLEMS, make_trainer, one_thread  # noqa: F401 - one_thread is an autouse fixture

from prmloop.policy.config import PolicyConfig
from prmloop.policy.logps import forward_logps
from prmloop.policy.lora import is_checkpointing
from prmloop.utils.errors import UserError

LORA = PolicyConfig(max_new_tokens=10, lora_r=4, lora_alpha=8)


def lora_trainer(**overrides):
    return make_trainer(policy_cfg=overrides.pop("policy_cfg", LORA), lr=1e-2, **overrides)


def logps(model, rollout) -> torch.Tensor:
    with torch.no_grad():
        return forward_logps(model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                             rollout.completion_mask)[0]


def a_rollout(trainer):
    prompts = [trainer.prompter(p.question) for p in PROBLEMS[:2]]
    return trainer._sample(trainer._encode(PROBLEMS[:2], prompts), 0, 0)


def base_and_adapters(trainer) -> tuple[dict, dict]:
    named = {name: p.detach().clone() for name, p in trainer.policy.named_parameters()}
    return ({k: v for k, v in named.items() if "lora_" not in k}, {k: v for k, v in named.items() if "lora_" in k})


def test_only_adapters_train_and_the_reference_is_the_base_with_adapters_disabled():
    trainer = lora_trainer(beta=0.04)
    assert trainer.reference is None  # no deep copy of the policy
    base, adapters = base_and_adapters(trainer)
    for step in range(2):
        trainer.train_step(PROBLEMS[2 * step: 2 * step + 2], step=step)
    new_base, new_adapters = base_and_adapters(trainer)
    assert all(torch.equal(base[k], new_base[k]) for k in base)  # the base is frozen
    assert any(not torch.equal(adapters[k], new_adapters[k]) for k in adapters)
    rollout = a_rollout(trainer)
    with trainer.policy.disable_adapter():
        disabled = logps(trainer.policy, rollout)
    reference = trainer._reference_logps(rollout)
    assert torch.allclose(reference, disabled, atol=1e-6)  # before any reset: π_ref = base, adapters disabled
    assert not torch.allclose(reference, logps(trainer.policy, rollout), atol=1e-4)
    assert all(torch.equal(new_adapters[k], v) for k, v in base_and_adapters(trainer)[1].items())  # swapped back
    trainer.reset_reference()
    assert torch.allclose(trainer._reference_logps(rollout), logps(trainer.policy, rollout), atol=1e-6)


def test_lora_checkpoint_holds_adapters_only_and_resumes_exactly(tmp_path):
    straight, first = lora_trainer(beta=0.04), lora_trainer(beta=0.04)
    for trainer in (straight, first):
        trainer.train(PROBLEMS, steps=1)
        trainer.reset_reference()  # the copy of the adapters for π_ref must come back with the checkpoint
    rest_straight = straight.train(PROBLEMS, steps=3)
    first.train(PROBLEMS, steps=2, checkpoint_dir=tmp_path / "ckpt")
    saved = {p.name for p in (tmp_path / "ckpt" / "policy").iterdir()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved  # no frozen base
    resumed = lora_trainer(beta=0.04)
    resumed.load(tmp_path / "ckpt")
    rest = resumed.train(PROBLEMS, steps=3)
    assert len(rest) == 1 and rest[0]["kl"] > 0
    assert rest[0]["loss"] == pytest.approx(rest_straight[-1]["loss"], abs=1e-6)
    assert rest[0]["kl"] == pytest.approx(rest_straight[-1]["kl"], abs=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(base_and_adapters(resumed)[1].values(),
                                                 base_and_adapters(straight)[1].values()))


def test_export_is_a_plain_model_with_the_adapters_merged(tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = lora_trainer(beta=0.0)
    trainer.train(PROBLEMS, steps=2)
    trainer.export(tmp_path / "policy")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert not any("lora" in name for name, _ in plain.named_parameters())
    rollout = a_rollout(trainer)
    assert torch.allclose(logps(plain, rollout), logps(trainer.policy, rollout), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_update():
    plain = lora_trainer()
    checkpointed = lora_trainer(policy_cfg=PolicyConfig(max_new_tokens=10, lora_r=4, lora_alpha=8,
                                                        gradient_checkpointing=True))
    assert is_checkpointing(checkpointed.policy) and not is_checkpointing(plain.policy)
    a = plain.train_step(PROBLEMS[:2], step=0)
    b = checkpointed.train_step(PROBLEMS[:2], step=0)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for (name, p), q in zip(plain.policy.named_parameters(), checkpointed.policy.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_lora_on_modules_the_model_lacks_is_one_line():
    with pytest.raises(UserError, match=r"policy.lora_target_modules: 'c_attn': no module named \['c_attn'\] in "
                                        r"LlamaForCausalLM; use 'all-linear' or names such as"):
        lora_trainer(policy_cfg=PolicyConfig(max_new_tokens=10, lora_r=4, lora_target_modules="c_attn"))


def test_grpo_job_with_lora_exports_a_plain_model_and_resumes(tmp_path):
    from test_grpo import _grpo_job_setup
    from transformers import AutoModelForCausalLM

    from prmloop.loop.jobs_grpo import grpo_job

    cfg, policy_dir = _grpo_job_setup(tmp_path, "outcome", "rule")
    cfg.policy.lora_r, cfg.grpo.beta = 4, 0.04
    grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=False)
    cfg.grpo.steps = 3
    summary = grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=True)
    assert summary["steps"] == 3 and summary["steps_this_run"] == 1
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "policy")
    assert not any("lora" in name for name, _ in plain.named_parameters())


def test_sampling_a_lora_policy_passes_the_cache_by_the_current_keyword():
    import warnings

    trainer = lora_trainer()
    with warnings.catch_warnings():  # transformers 5 renamed past_key_values to cache; the old name goes in 5.40
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        rollout = a_rollout(trainer)
    assert rollout.completion_ids.shape[0] == 2 * trainer.cfg.group_size
