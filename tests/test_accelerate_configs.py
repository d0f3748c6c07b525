"""The accelerate configs shipped in configs/accelerate: they load, the README names each, and sharded setups
(FSDP, DeepSpeed) are refused in one line before any work."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from prmloop.data.errors import UserError
from prmloop.policy.distributed import refuse_sharded

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_loads_and_is_in_the_readme(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
    assert f"configs/accelerate/{path.name}" in (ROOT / "README.md").read_text()


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"ddp.yaml", "cpu_ddp.yaml"}


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM])
def test_sharded_setups_are_one_line(kind):
    with pytest.raises(UserError, match=rf"^grpo: accelerate's distributed_type {kind.name} is not supported "
                                        r"\(prmloop trains with one process or DDP"):
        refuse_sharded(SimpleNamespace(distributed_type=kind), "grpo")


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_one_process_and_ddp_are_fine(kind):
    refuse_sharded(SimpleNamespace(distributed_type=kind), "grpo")
