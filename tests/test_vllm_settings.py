"""Tests for policy/vllm_settings.py and the vLLM refusals of policy/vllm_backend.py on CPU: one-line errors
without vllm or CUDA (before any model loads), and the grpo.vllm_* settings as the config loads and checks them."""

import sys
from types import SimpleNamespace

import pytest
import torch
from test_grpo import PROBLEMS, make_trainer, one_thread  # noqa: F401 - one_thread is an autouse fixture

from prmloop.loop.config import load_config
from prmloop.policy import rollout
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import validate_config
from prmloop.policy.vllm_backend import (
    NEEDS,
    VLLMBackend,
    require_vllm,
)
from prmloop.policy.vllm_settings import engine_max_num_seqs, parse_engine_args
from prmloop.utils.errors import UserError

# ---------------------------------------------------------------- errors and config (CPU)


def test_use_vllm_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as caught:
        make_trainer(use_vllm=True)
    assert str(caught.value) == ("grpo.use_vllm: needs the 'vllm' extra (pip install 'prmloop[vllm]') and a CUDA GPU; "
                                 "no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")


def test_use_vllm_without_vllm_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, as when it is absent
    with pytest.raises(UserError) as caught:
        make_trainer(use_vllm=True)
    message = str(caught.value)
    assert message.startswith(f"{NEEDS}; vllm cannot be imported (") and "\n" not in message
    assert message.startswith("grpo.use_vllm: needs the 'vllm' extra (pip install 'prmloop[vllm]') and a CUDA GPU")


def test_too_old_vllm_and_many_processes_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(__version__="0.9.2"))
    with pytest.raises(UserError, match=r"^grpo\.use_vllm: .*; vllm 0\.9\.2 is installed, older than 0\.10$"):
        require_vllm()
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(__version__="0.10.1.dev7+gabc"))
    assert require_vllm().__version__ == "0.10.1.dev7+gabc"
    with pytest.raises(UserError, match=r"^grpo\.use_vllm: runs in one process only for now; this run has 2 "):
        VLLMBackend.from_configs(None, None, GRPOConfig(use_vllm=True), PolicyConfig(), num_processes=2)


def test_config_fields_load_and_are_checked():
    defaults = load_config(None, [])
    assert (defaults.grpo.use_vllm, defaults.grpo.vllm_gpu_memory_utilization, defaults.grpo.vllm_sleep) == (
        False, 0.3, True)
    cfg = load_config(None, ["grpo.use_vllm=true", "grpo.vllm_gpu_memory_utilization=1", "grpo.vllm_sleep=false"])
    assert cfg.grpo.use_vllm is True and cfg.grpo.vllm_gpu_memory_utilization == 1.0 and cfg.grpo.vllm_sleep is False
    for bad, shown in (("0", "0.0"), ("1.5", "1.5"), ("-0.2", "-0.2"), ("nan", "nan")):
        with pytest.raises(UserError) as caught:
            load_config(None, [f"grpo.vllm_gpu_memory_utilization={bad}"])
        assert str(caught.value) == (f"defaults + --set: grpo.vllm_gpu_memory_utilization = {shown}: "
                                     "must be a number in (0, 1]")
    with pytest.raises(UserError, match=r"key 'grpo\.use_vllm' expects bool"):
        load_config(None, ["grpo.use_vllm=maybe"])


def test_engine_settings_load_and_are_checked():
    grpo = load_config(None, []).grpo
    assert (grpo.vllm_dtype, grpo.vllm_max_num_seqs, grpo.vllm_engine_args, grpo.vllm_old_logps, grpo.vllm_is_cap) == (
        "bfloat16", 0, "", "recompute", 0.0)
    cfg = load_config(None, ['grpo.vllm_engine_args={"enforce_eager": true, "swap_space": 2}', "grpo.vllm_is_cap=2",
                             "grpo.vllm_max_num_seqs=32", "grpo.vllm_dtype=auto", "grpo.vllm_old_logps=recompute"])
    assert parse_engine_args(cfg.grpo.vllm_engine_args) == {"enforce_eager": True, "swap_space": 2}
    assert engine_max_num_seqs(cfg.grpo) == 32 and engine_max_num_seqs(GRPOConfig(generation_batch_size=48)) == 48
    validate_config(cfg.grpo)
    bad = {
        "vllm_engine_args='{enforce_eager: true}'": r"^grpo\.vllm_engine_args: not valid JSON \(Expecting property name "
                                                    r"enclosed in double quotes at character 1\); write a JSON object",
        "vllm_engine_args=[1, 2]": r"^grpo\.vllm_engine_args: must be a JSON object \(\{\.\.\.\}\), got a JSON list$",
        'vllm_engine_args={"dtype": "half"}': r"^grpo\.vllm_engine_args: 'dtype' cannot be given here \(set "
                                              r"grpo\.vllm_dtype instead\)$",
        'vllm_engine_args={"logprobs_mode": "processed_logprobs"}': r"'logprobs_mode' cannot be given here \(prmloop "
                                                                    r"sets it itself\)$",
        "vllm_dtype=fp8": r"grpo\.vllm_dtype = 'fp8': must be one of auto, bfloat16, float16, float32$",
        "vllm_old_logps=trainer": r"grpo\.vllm_old_logps = 'trainer': must be one of recompute, engine$",
        "vllm_is_cap=0.5": r"grpo\.vllm_is_cap = 0\.5: must be 0 \(off\) or a finite number >= 1$",
        "vllm_max_num_seqs=-1": r"grpo\.vllm_max_num_seqs = -1: must be a finite number >= 0$",
    }
    for assignment, message in bad.items():
        with pytest.raises(UserError, match=message):
            validate_config(load_config(None, [f"grpo.{assignment}"]).grpo)
    with pytest.raises(UserError, match=r"^grpo\.vllm_is_cap: importance sampling needs the trainer's own log-probs"):
        validate_config(GRPOConfig(vllm_old_logps="engine", vllm_is_cap=2.0))


@pytest.mark.parametrize("missing", ["cuda", "vllm"])
def test_grpo_command_stops_in_one_line_before_loading_anything(tmp_path, monkeypatch, capsys, missing):
    from prmloop.loop.cli import main

    monkeypatch.setattr(rollout, "SAMPLER_BACKEND", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: missing != "cuda")
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as when it is absent
    loaded = []
    monkeypatch.setattr("prmloop.loop.jobs_grpo.load_policy", lambda *a, **k: loaded.append(a))
    assert main(["grpo", "--policy", str(tmp_path / "no-policy-here"), "--out", str(tmp_path / "run"), "--config",
                 "configs/quick.yaml", "--set", "grpo.use_vllm=true", "--set", "grpo.supervision=outcome", "--set",
                 "grpo.reward_source=rule"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prmloop: error: {NEEDS}; ")
    assert ("no CUDA GPU is visible" in err) == (missing == "cuda")
    assert ("cannot be imported" in err) == (missing == "vllm")
    assert not (tmp_path / "run").exists() and not loaded  # nothing written, no model loaded


# ---------------------------------------------------------------- pure pieces (CPU)
