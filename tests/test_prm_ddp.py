"""`prmloop prm train` under `accelerate launch` with 2 CPU processes: the same global batches and losses as one
process, the same saved model, and one process (the main one) printing and writing the output folder."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_grpo import _free_port

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--config", "configs/quick.yaml", "--set", "prm.batch_size=8", "--set", "prm.epochs=2",
         "--set", "prm.val_fraction=0.0", "--set", "prm.lr=1e-3"]


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                               reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")


@pytest.mark.slow
@pytest.mark.parametrize(("config", "precision"), [("cpu_ddp.yaml", "no"),
                                                   pytest.param("cpu_deepspeed_zero2.yaml", "no", marks=DEEPSPEED),
                                                   pytest.param("cpu_deepspeed_zero2.yaml", "bf16", marks=DEEPSPEED)],
                         ids=["ddp", "deepspeed", "deepspeed-bf16"])
def test_prm_train_on_two_processes_matches_one_and_writes_once(tmp_path, config, precision):
    """bf16 (the launch file's mixed precision): a bf16 model under DeepSpeed, whose losses stay within 5% of the
    float32 run's and whose saved weights are bf16."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled",
           "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, also on a GPU box
    env.pop("ACCELERATE_USE_CPU", None)
    cli = [sys.executable, "-m", "prmloop"]
    _run([*cli, "policy", "init", "--out", str(tmp_path / "policy"), *QUICK], env)
    _run([*cli, "prm", "label", "--policy", str(tmp_path / "policy"), "--method", "exact", "--samples", "2",
          "--out", str(tmp_path / "labels.jsonl"), *QUICK, "--set", "data.n_train=24"], env)
    train = ["prm", "train", "--data", str(tmp_path / "labels.jsonl"), "--init", str(tmp_path / "policy"), *QUICK]
    one = _run([*cli, *train, "--out", str(tmp_path / "one")], env)
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--config_file", f"configs/accelerate/{config}", "--dynamo_backend", "no",
              "--mixed_precision", precision, "--main_process_port", str(_free_port()), "-m", "prmloop"]
    two = _run([*launch, *train, "--out", str(tmp_path / "two")],
               {**env, "ACCELERATE_USE_CPU": "1"} if config == "cpu_ddp.yaml" else env)  # DeepSpeed: no USE_CPU
    assert one.stdout.count("PRM trained:") == 1 and two.stdout.count("PRM trained:") == 1  # printed once
    assert two.stdout.count("prm epoch 2/2") == 1
    metrics = [json.loads((tmp_path / run / "prm_metrics.json").read_text()) for run in ("one", "two")]
    assert len(metrics[0]["history"]) == len(metrics[1]["history"]) == 2
    for a, b in zip(metrics[0]["history"], metrics[1]["history"]):
        assert b["train_loss"] == (pytest.approx(a["train_loss"], abs=1e-5) if precision == "no"
                                   else pytest.approx(a["train_loss"], rel=0.05))
    weights = [load_file(tmp_path / run / "model.safetensors") for run in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        if precision == "no":
            assert torch.allclose(value, weights[1][key], atol=1e-5), key
        else:
            assert weights[1][key].dtype == torch.bfloat16, key
    assert not list(tmp_path.glob("two*/.*tmp*"))  # no second writer's leftovers
