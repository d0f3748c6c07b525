"""Tests for policy/vllm_backend.py on CPU: the pure pieces (padding, log-probs) and the engine calls against a fake
``vllm`` module. Refusals and settings: tests/test_vllm_settings.py; the real engine on a GPU: tests/test_vllm_gpu.py."""

import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_grpo import PROBLEMS, make_trainer, one_thread  # noqa: F401 - one_thread is an autouse fixture

import prmloop.policy.grpo as grpo_module
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.loop.config import load_config
from prmloop.policy import rollout, vllm_backend
from prmloop.policy.config import GRPOConfig
from prmloop.policy.logps import forward_logps
from prmloop.policy.sampling import row_seed
from prmloop.policy.tiny import tiny_random_model
from prmloop.policy.vllm_backend import (
    VLLMBackend,
    generation_from_outputs,
    sampled_logps,
)
from prmloop.utils.lora import add_lora

# ---------------------------------------------------------------- pure pieces


def test_generation_from_outputs_literal():
    # EOS id 2, pad 0. Row 0 ends with EOS; row 1 is cut off at 4 tokens; row 2 drew EOS as its 4th (= max_tokens-th)
    # token, which vLLM reports as a "length" stop, but it did end with EOS; row 3 is a lone EOS.
    tokens = [[5, 7, 2], [4, 4, 4, 4], [6, 6, 6, 2], [2]]
    logps = [[-0.5, -1.0, -0.25], [-1.0, -2.0, -3.0, -4.0], [-0.1, -0.2, -0.3, -0.4], [-2.5]]
    generation = generation_from_outputs(tokens, logps, eos_ids=[2], pad_id=0)
    assert generation.completion_ids.tolist() == [[5, 7, 2, 0], [4, 4, 4, 4], [6, 6, 6, 2], [2, 0, 0, 0]]
    assert generation.completion_mask.tolist() == [[True, True, True, False], [True] * 4, [True] * 4,
                                                   [True, False, False, False]]
    assert generation.logp.tolist() == [[-0.5, -1.0, -0.25, 0.0], [-1.0, -2.0, -3.0, -4.0],
                                        [pytest.approx(v) for v in (-0.1, -0.2, -0.3, -0.4)], [-2.5, 0.0, 0.0, 0.0]]
    assert generation.finished.tolist() == [True, False, True, True]
    assert generation.logp.dtype == torch.float32 and generation.completion_ids.dtype == torch.long


def test_sampled_logps_picks_the_sampled_token():
    # logprobs=0 still returns the sampled token, and vLLM may add the top-1 token beside it.
    logprob = lambda value: SimpleNamespace(logprob=value)
    completion = SimpleNamespace(token_ids=[7, 3], logprobs=[{7: logprob(-1.5), 9: logprob(-0.2)}, {3: logprob(-0.75)}])
    assert sampled_logps(completion) == [-1.5, -0.75]
    with pytest.raises(RuntimeError, match="no log-probs"):
        sampled_logps(SimpleNamespace(token_ids=[7], logprobs=None))


# ---------------------------------------------------------------- engine calls against a fake vllm (CPU)


@dataclass
class Logprob:
    """vllm.logprobs.Logprob (vLLM >= 0.10): one position's entry of ``CompletionOutput.logprobs``."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """vllm.outputs.CompletionOutput: ``logprobs`` is a list (one per sampled token) of dict token_id -> Logprob."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """vllm.outputs.RequestOutput (the fields prmloop may touch)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


class FakeLLM:
    """Stands in for ``vllm.LLM`` with its ≥ 0.10 signatures and output layout: records its arguments and every call;
    a request's tokens come from ``script``. Their log-probs are scripted (-0.5, -1.0, ...) unless ``true_logps`` is
    set: then they are the pushed weights' own temperature-1 log-probs plus Gaussian noise of std ``perturb`` (a bf16
    engine's kernels disagree with the trainer's by a little)."""

    def __init__(self, model, **kwargs):
        self.kwargs, self.env = {"model": model, **kwargs}, os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        self.config = json.loads((Path(model) / "config.json").read_text())
        self.calls, self.pushed, self.params = [], {}, []
        self.script = lambda seed: [30 + seed % 7, 31] + ([1] if seed % 2 == 0 else [])
        self.true_logps, self.perturb = False, 0.0
        torch.manual_seed(1234)  # vLLM seeds the global generators of the process it runs in
        random.seed(1234)

    def apply_model(self, func):
        self.calls.append("push")
        engine_model = SimpleNamespace(load_weights=lambda weights: self.pushed.update(
            (name, value.detach().clone()) for name, value in weights))
        return [func(engine_model)]

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        self.calls.append("generate")
        assert not torch.is_autocast_enabled("cuda") and use_tqdm is False and lora_request is None
        self.prompts, self.params, self.sampled_logps = prompts, sampling_params, []
        outputs = []
        for index, (prompt, p) in enumerate(zip(prompts, sampling_params)):
            tokens = self.script(p.seed)
            values = (self._model_logps(prompt["prompt_token_ids"], tokens, p.seed) if self.true_logps
                      else [-0.5 * (i + 1) for i in range(len(tokens))])
            self.sampled_logps.append(values)
            logprobs = [{token: Logprob(value, rank=2, decoded_token=None), 99: Logprob(-9.0, rank=1)}
                        for token, value in zip(tokens, values)]
            completion = CompletionOutput(0, "", tokens, sum(values), logprobs, "stop" if tokens[-1] == 1 else "length")
            outputs.append(RequestOutput(str(index), None, prompt["prompt_token_ids"], None, [completion]))
        return outputs

    def _model_logps(self, prompt_ids, tokens, seed):
        from transformers import AutoConfig, AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.kwargs["model"]))
        model.load_state_dict(self.pushed)
        prompt_mask, mask = torch.ones(1, len(prompt_ids), dtype=torch.bool), torch.ones(1, len(tokens), dtype=torch.bool)
        logp, _ = forward_logps(model.eval(), torch.tensor([prompt_ids]), prompt_mask, torch.tensor([tokens]), mask)
        noise = torch.randn(len(tokens), generator=torch.Generator().manual_seed(seed)) * self.perturb
        return (logp[0].detach() + noise).tolist()

    def sleep(self, level=1):
        self.calls.append(f"sleep {level}")

    def wake_up(self, tags=None):
        self.calls.append(f"wake {','.join(tags)}")

    def reset_prefix_cache(self, *args, **kwargs):  # 0.10: (device=None); later: (reset_running_requests=False, ...)
        self.calls.append("reset prefix cache")
        return True


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(__version__="0.10.2", LLM=FakeLLM,
                                                             SamplingParams=lambda **kw: SimpleNamespace(**kw)))
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(vllm_backend, "_ENGINES", {})  # each test starts a process without an engine
    monkeypatch.setattr(rollout, "SAMPLER_BACKEND", None)


def fake_backend(sleep: bool, model=None):
    tokenizer = build_task_tokenizer()  # EOS id 1, pad id 0
    model = tiny_random_model("llama", tokenizer, seed=0) if model is None else model
    return VLLMBackend(model, tokenizer, 8, temperature=0.7, top_p=0.9, max_model_len=160, gpu_memory_utilization=0.25,
                       sleep=sleep, seed=3), model


def test_engine_is_built_in_process_from_the_policy_config(fake_vllm):
    model = tiny_random_model("llama", build_task_tokenizer(), seed=0)
    torch.manual_seed(7)
    random.seed(7)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(7)
    random.seed(7)
    backend, _ = fake_backend(sleep=True, model=model)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]  # global RNG states kept
    llm = backend.llm
    assert llm.env == "0" and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # set while building, then restored
    assert llm.config["hidden_size"] == model.config.hidden_size and llm.config["model_type"] == "llama"
    assert llm.config["architectures"] == ["LlamaForCausalLM"] and model.config.architectures is None  # not mutated
    assert {key: llm.kwargs[key] for key in ("load_format", "skip_tokenizer_init", "generation_config", "dtype",
                                              "max_model_len", "gpu_memory_utilization", "enable_sleep_mode", "seed",
                                              "logprobs_mode", "distributed_executor_backend")} == {
        "load_format": "dummy", "skip_tokenizer_init": True, "generation_config": "vllm", "dtype": "float32",
        "max_model_len": 160, "gpu_memory_utilization": 0.25, "enable_sleep_mode": True, "seed": 3,
        "logprobs_mode": "raw_logprobs", "distributed_executor_backend": "uni"}


def test_requests_and_generation(fake_vllm):
    backend, _ = fake_backend(sleep=False)
    generation = backend.generate([[4, 5], [6]], row_seeds=[10, 3])
    assert backend.llm.prompts == [{"prompt_token_ids": [4, 5]}, {"prompt_token_ids": [6]}]
    first = vars(backend.llm.params[0])
    assert first == {"n": 1, "seed": 10, "temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "logprobs": 0,
                     "stop_token_ids": [1], "detokenize": False}
    assert backend.llm.params[1].seed == 3
    # seed 10 -> [30 + 3, 31, EOS 1]; seed 3 -> [30 + 3, 31] (odd seed: no EOS, cut off); log-probs -0.5, -1.0, -1.5
    assert generation.completion_ids.tolist() == [[33, 31, 1], [33, 31, 0]]
    assert generation.completion_mask.tolist() == [[True, True, True], [True, True, False]]
    assert generation.logp.tolist() == [[-0.5, -1.0, -1.5], [-0.5, -1.0, 0.0]]
    assert generation.finished.tolist() == [True, False]


def test_pushes_without_sleep(fake_vllm):
    backend, model = fake_backend(sleep=False)
    backend.generate([[4]], [0])
    backend.generate([[4]], [1])
    assert backend.llm.calls == ["push", "reset prefix cache", "generate", "generate"]  # pushed once, before sampling
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    backend.sync_weights(model)
    backend.sync_weights(model)  # μ optimizer steps before the next sampling still cost one push
    backend.generate([[4]], [2])
    assert backend.llm.calls[4:] == ["push", "reset prefix cache", "generate"]
    assert list(backend.llm.pushed) == list(model.state_dict())
    assert torch.equal(backend.llm.pushed["lm_head.weight"], model.lm_head.weight)  # the current weights


def test_a_lora_policy_gives_its_base_architecture_and_merged_weights(fake_vllm):
    peft = add_lora(tiny_random_model("llama", build_task_tokenizer(), seed=0), 4, 32, task_type="CAUSAL_LM")
    backend, _ = fake_backend(sleep=False, model=peft)
    backend.generate([[4]], [0])
    assert backend.llm.config["architectures"] == ["LlamaForCausalLM"]
    plain = tiny_random_model("llama", build_task_tokenizer(), seed=0)
    assert list(backend.llm.pushed) == list(plain.state_dict())  # the names of the plain model, in its order


def test_sleep_wakes_weights_then_pushes_then_wakes_the_kv_cache(fake_vllm, monkeypatch):
    backend, _ = fake_backend(sleep=True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: backend.llm.calls.append("empty cache"))
    backend.generate([[4]], [0])
    backend.generate([[4]], [1])  # no optimizer step between: level 2 released the weights, so they come back anyway
    # the trainer's cached free blocks go back to the driver before each wake, so vLLM can take them
    assert backend.llm.calls == ["push", "reset prefix cache", "generate", "sleep 2", "empty cache", "wake weights",
                                 "push", "empty cache", "wake kv_cache", "generate", "sleep 2"]


def test_grpo_trainer_samples_with_the_engine_and_syncs_after_each_kept_step(fake_vllm):
    tokenizer = build_task_tokenizer()
    newline, eos = tokenizer.convert_tokens_to_ids("\n"), tokenizer.eos_token_id
    trainer = make_trainer(use_vllm=True, vllm_sleep=False, vllm_gpu_memory_utilization=0.5, temperature=0.9)
    assert isinstance(trainer.backend, VLLMBackend) and trainer.backend.llm.kwargs["gpu_memory_utilization"] == 0.5
    assert trainer.backend.llm.kwargs["max_model_len"] == trainer.policy_cfg.max_length
    # ids 5..12 are digits and 13..20 letters: DigitScorer gives each one-token step 1 or 0, so groups have spread
    trainer.backend.llm.script = lambda seed: [5 + seed % 16, newline, 5 + seed // 16 % 16, newline, eos]
    def weights():
        return {name: value.clone() for name, value in trainer.policy.state_dict().items()}

    initial = weights()
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 0 and math.isfinite(metrics["loss"])
    assert [p.seed for p in trainer.backend.llm.params] == [row_seed(0, 0, i, g) for i in range(2) for g in range(4)]
    assert all(torch.equal(initial[k], v) for k, v in trainer.backend.llm.pushed.items())  # step 0 sampled π_init
    updated = weights()
    assert not all(torch.equal(initial[k], updated[k]) for k in initial)
    trainer.train_step(PROBLEMS[2:4], step=1)
    assert trainer.backend.llm.calls == ["push", "reset prefix cache", "generate",
                                         "push", "reset prefix cache", "generate"]
    assert all(torch.equal(updated[k], v) for k, v in trainer.backend.llm.pushed.items())  # step 1 sampled π after 0


def test_one_engine_serves_every_backend_and_each_samples_from_its_own_policy(fake_vllm, monkeypatch):
    built, build = [], FakeLLM.__init__

    def counted(self, **kwargs):
        built.append(kwargs["model"])
        build(self, **kwargs)

    monkeypatch.setattr(FakeLLM, "__init__", counted)
    trainer = make_trainer(use_vllm=True, vllm_sleep=False)
    engine = trainer.backend.llm
    trainer.train_step(PROBLEMS[:2], step=0)
    # evaluation in the same process: greedy, its own length, the same engine; the policy is already in it
    greedy = VLLMBackend.from_configs(trainer.policy, trainer.tokenizer, trainer.cfg, trainer.policy_cfg,
                                      max_new_tokens=5, temperature=0.0, top_p=1.0)
    assert greedy.llm is engine and len(built) == 1
    greedy.generate([[4]], [7])
    assert vars(greedy.llm.params[0])["temperature"] == 0.0 and vars(greedy.llm.params[0])["max_tokens"] == 5
    assert engine.calls[-3:] == ["push", "reset prefix cache", "generate"]  # a new backend pushes its policy once
    trainer.backend.generate([[4]], [8])
    assert engine.calls[-1] == "generate"  # the trainer's policy is what the engine holds: no second push
    # the next arm: another trainer, another policy object, the same engine, which takes the new weights
    other = make_trainer(use_vllm=True, vllm_sleep=False, seed=1)
    assert other.backend.llm is engine and len(built) == 1
    other.backend.generate([[4]], [9])
    assert engine.calls[-3:] == ["push", "reset prefix cache", "generate"]
    assert all(torch.equal(engine.pushed[k], v) for k, v in other.policy.state_dict().items())


def test_use_vllm_makes_every_policy_sampler_use_the_engine(fake_vllm):
    from prmloop.policy.rollout import PolicySampler

    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    assert type(PolicySampler(model, tokenizer, 8).backend).__name__ == "HFBackend"
    cfg = load_config(None, ["grpo.use_vllm=true", "grpo.vllm_sleep=false"])
    vllm_backend.sample_with_vllm(cfg.grpo, cfg.policy)
    sampler = PolicySampler(model, tokenizer, 6, temperature=0.0, seed=2)
    assert isinstance(sampler.backend, VLLMBackend)
    digit = tokenizer.convert_tokens_to_ids("7")
    sampler.backend.llm.script = lambda seed: [digit, digit, tokenizer.eos_token_id]
    assert sampler.complete(["1+1=\n", "2+2=\n"], n=2) == [["77", "77"], ["77", "77"]]
    params = sampler.backend.llm.params
    assert [vars(p)["seed"] for p in params] == [row_seed(2, 0, i, g) for i in range(2) for g in range(2)]
    assert {(vars(p)["temperature"], vars(p)["max_tokens"]) for p in params} == {(0.0, 6)}


def test_use_vllm_without_a_gpu_stops_labelling_in_one_line(tmp_path, monkeypatch, capsys):
    from prmloop.loop.cli import main

    monkeypatch.setattr(rollout, "SAMPLER_BACKEND", None)  # main sets it for the rest of this process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    quick = ["--config", "configs/quick.yaml"]
    assert main(["policy", "init", "--out", str(tmp_path / "policy"), *quick]) == 0
    assert main(["prm", "label", "--policy", str(tmp_path / "policy"), "--method", "exhaustive", "--out",
                 str(tmp_path / "labels.jsonl"), *quick, "--set", "grpo.use_vllm=true"]) == 2
    assert capsys.readouterr().err.strip() == (
        "prmloop: error: grpo.use_vllm: needs the 'vllm' extra (pip install 'prmloop[vllm]') and a CUDA GPU; no CUDA "
        "GPU is visible to torch (torch.cuda.is_available() is False)")
    assert not (tmp_path / "labels.jsonl").exists()


def test_engine_arguments_come_from_the_config(fake_vllm):
    trainer = make_trainer(use_vllm=True, vllm_max_num_seqs=24, vllm_engine_args='{"enforce_eager": true}')
    kwargs = trainer.backend.llm.kwargs
    assert (kwargs["dtype"], kwargs["max_num_seqs"], kwargs["enforce_eager"]) == ("bfloat16", 24, True)
    assert next(trainer.policy.parameters()).dtype == torch.float32  # the trainer's weights stay fp32
    same = VLLMBackend.from_configs(trainer.policy, trainer.tokenizer, GRPOConfig(use_vllm=True, vllm_dtype="auto"),
                                    trainer.policy_cfg)
    assert same.llm is not trainer.backend.llm  # other engine settings: another engine
    assert (same.llm.kwargs["dtype"], same.llm.kwargs["max_num_seqs"]) == ("float32", 256)  # 'auto': the policy's


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave these tests without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def recorded_losses(monkeypatch) -> list[dict]:
    """Every grpo_loss call of the trainer: log ρ at valid tokens (0 elsewhere), π_old, the mask and the IS weights."""
    calls, original = [], grpo_module.grpo_loss

    def recording(logp, old_logp, ref_logp, advantages, mask, clip_eps, beta, sampling_weight=None):
        calls.append({"log_ratio": torch.where(mask, logp.detach() - old_logp, 0.0), "old_logp": old_logp,
                      "mask": mask, "weight": sampling_weight})
        return original(logp, old_logp, ref_logp, advantages, mask, clip_eps, beta, sampling_weight)

    monkeypatch.setattr(grpo_module, "grpo_loss", recording)
    return calls


def engine_trainer(perturb: float, **overrides):
    """A trainer on the stand-in engine, whose log-probs are the pushed weights' own plus noise of std ``perturb``."""
    trainer = make_trainer(use_vllm=True, vllm_sleep=False, **overrides)
    newline, eos = trainer.tokenizer.convert_tokens_to_ids("\n"), trainer.tokenizer.eos_token_id
    trainer.backend.llm.script = lambda seed: [5 + seed % 16, newline, 5 + seed // 16 % 16, newline, eos]
    trainer.backend.llm.true_logps, trainer.backend.llm.perturb = True, perturb
    return trainer


@pytest.mark.parametrize(("old_logps", "perturb", "precision"), [
    ("recompute", 0.05, "no"), ("recompute", 0.05, "bf16"), ("engine", 0.05, "no"), ("engine", 0.0, "no")])
def test_ratio_starts_at_exactly_one_only_with_recomputed_old_logps(fake_vllm, monkeypatch, fresh_accelerate_state,
                                                                     old_logps, perturb, precision):
    calls = recorded_losses(monkeypatch)
    trainer = engine_trainer(perturb, vllm_old_logps=old_logps, mu=2, mixed_precision=precision)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 0 and len(calls) == 2  # μ = 2 inner updates, one micro-batch each
    first, second = calls[0]["log_ratio"], calls[1]["log_ratio"]
    assert calls[0]["mask"].sum() == 8 * 5 and second.abs().max() > 0  # the second update is after a step
    if old_logps == "recompute":  # π_old is the training model's own forward: ρ = 1 exactly, whatever the engine said
        assert torch.equal(first, torch.zeros_like(first))
        # |N(0, 0.05)| has mean 0.05·sqrt(2/π) = 0.040
        assert 0.02 < metrics["sampling/sampling_logp_difference/mean"] < 0.06
    elif perturb:  # the engine's log-probs as π_old: ρ starts off 1 by the engine/trainer gap
        assert first.abs().max() > 0.05 and "sampling/sampling_logp_difference/mean" not in metrics
    else:  # the stand-in's log-probs are the weights' own: without noise it agrees with the trainer up to rounding
        assert first.abs().max() < 1e-5


def test_truncated_importance_sampling_weights_each_token(fake_vllm, monkeypatch):
    calls = recorded_losses(monkeypatch)
    trainer = engine_trainer(0.05, vllm_is_cap=1.02)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    engine = torch.tensor(trainer.backend.llm.sampled_logps)  # (8, 5): every completion has 5 tokens
    old, weight = calls[0]["old_logp"], calls[0]["weight"]
    assert torch.allclose(weight, torch.exp(old - engine).clamp(max=1.02))  # min(π_old / π_engine, C), C = 1.02
    assert weight.max() == pytest.approx(1.02) and weight.min() < 0.98  # the cap binds, and small ratios stay
    assert metrics["sampling/importance_sampling_ratio/max"] == pytest.approx(1.02)
    assert metrics["sampling/importance_sampling_ratio/min"] == pytest.approx(weight.min().item())
