"""The accelerate configs shipped in configs/accelerate: they load, the README names each, and setups that shard the
weights (ZeRO-3, FSDP, Megatron) are refused in one line before any work; DDP and DeepSpeed ZeRO-1/2 run (the
two-process runs are in test_grpo.py and test_prm_ddp.py)."""

import builtins
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from prmloop.utils.distributed import check_engine, configure_deepspeed, make_accelerator
from prmloop.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_loads_and_is_in_the_readme(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU, DistributedType.DEEPSPEED)
    if config.distributed_type == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2
    assert f"configs/accelerate/{path.name}" in (ROOT / "README.md").read_text()


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"ddp.yaml", "cpu_ddp.yaml", "deepspeed_zero2.yaml", "cpu_deepspeed_zero2.yaml"}


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.MEGATRON_LM])
def test_sharded_setups_are_one_line(kind):
    with pytest.raises(UserError, match=rf"^grpo: accelerate's distributed_type {kind.name} is not supported "
                                        r"\(prmloop trains with one process, DDP or DeepSpeed ZeRO-1/2"):
        check_engine(SimpleNamespace(distributed_type=kind), "grpo")


def _deepspeed(stage: int) -> SimpleNamespace:
    plugin = SimpleNamespace(zero_stage=stage, deepspeed_config={"train_micro_batch_size_per_gpu": "auto"})
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=SimpleNamespace(deepspeed_plugin=plugin),
                           num_processes=2)


def test_zero3_is_one_line_and_zero2_runs():
    with pytest.raises(UserError, match=r"^prm train: DeepSpeed ZeRO stage 3 shards the weights, and prmloop samples "
                                        r"from and saves whole weights; use ZeRO stage 2"):
        check_engine(_deepspeed(3), "prm train")
    for stage in (0, 1, 2):
        check_engine(_deepspeed(stage), "prm train")


def test_deepspeed_takes_the_trainers_batch_and_clipping():
    accelerator = _deepspeed(2)
    configure_deepspeed(accelerator, micro_batch=6, max_grad_norm=0.5)
    assert accelerator.state.deepspeed_plugin.deepspeed_config == {
        "train_micro_batch_size_per_gpu": 6, "gradient_accumulation_steps": 1, "train_batch_size": 12,
        "gradient_clipping": 0.5}
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)
    configure_deepspeed(ddp, micro_batch=6, max_grad_norm=0.5)  # nothing to set, nothing touched
    assert vars(ddp) == {"distributed_type": DistributedType.MULTI_GPU}


def test_deepspeed_without_the_package_is_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_deepspeed(name, *args, **kwargs):
        if name == "deepspeed":
            raise ImportError("No module named 'deepspeed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(builtins, "__import__", no_deepspeed)
    with pytest.raises(UserError, match=r"^grpo: accelerate launch asks for DeepSpeed, which is not installed; "
                                        r"install the extra: pip install 'prmloop\[deepspeed\]'$"):
        make_accelerator("grpo")


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_one_process_and_ddp_are_fine(kind):
    check_engine(SimpleNamespace(distributed_type=kind), "grpo")
