"""The real-model path's checks that only a GPU box can confirm, in one short run; prints one table row per check.

Usage (on a machine with CUDA; the vLLM row needs `pip install -e '.[vllm,dev]'`):
    python bench/gpu_checks.py                       # stand-ins only: nothing is downloaded
    python bench/gpu_checks.py --hub-prm Qwen/Qwen2.5-Math-PRM-7B   # also the real hub PRM (needs the hub or its cache)

Rows:
1. precision: 10 GRPO steps at lr 1e-6 (the GSM8K/MATH configs' settings) on the GPU: the fraction of weights that
   move with fp32 master weights + bf16 autocast (the default) and with pure bf16 weights (the warned-about option).
2. hub PRM: the Qwen2.5-Math-PRM stand-ins (tests/test_prm_hub_formats.py, tests/test_prm_export.py) and, with
   --hub-prm, the real checkpoint: prmloop's native reading against the checkpoint's own remote code on one
   example in its model card's chat layout (float32, TF32 off), largest |difference| of the step probabilities
   (this comparison ran on a CPU against the tiny Qwen PRM stand-in of the tests: difference 0).
4. vLLM π_old: tests/test_vllm_gpu.py, one process per engine (vLLM's sleep-mode allocator serves one engine per
   process): raw log-probs, sampling statistics, weight sync, LoRA, sleep, and the bf16 engine with fp32 trainer
   weights whose recomputed π_old gives ρ = 1 at the first inner update.
5. W&B under accelerate launch: `prmloop grpo` and `prmloop prm train` launched over every visible GPU on a tiny
   random Qwen2 (tests/hub_fixtures.py): exactly one offline W&B run each (main process only), with train/* or prm/*
   rows.
Exit status 1 if any row failed. Timings and numbers are the GPU's; name the card when you report them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
ENV = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"), "WANDB_SILENT": "true",
       "TQDM_DISABLE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def run(command: list[str], **kwargs) -> tuple[bool, str]:
    """(passed, last line of output) of a subprocess run from the repository root."""
    done = subprocess.run(command, cwd=ROOT, env={**ENV, **kwargs.pop("env", {})}, capture_output=True, text=True,
                          check=False, **kwargs)
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    return done.returncode == 0, lines[-1][:160]


def check_precision() -> tuple[bool, str]:
    import torch
    from test_precision import run_small_lr

    from prmloop.loop.config import load_config  # noqa: F401 -- the configs' precision is what the test runs

    mixed, compute = run_small_lr(torch.float32, "bf16")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process: start the second run clean
    pure, _ = run_small_lr(torch.bfloat16, "no")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ok = mixed > 0.99 and pure < mixed and compute == {torch.bfloat16}
    return ok, f"{device}: fp32+bf16 autocast moved {mixed:.1%} of weights, pure bf16 {pure:.1%}"


EXAMPLE = {  # a GSM8K-style question in the chat layout of the Qwen2.5-Math-PRM model card, one step wrong
    "system": "Please reason step by step, and put your final answer within \\boxed{}.",
    "query": "A baker makes 24 rolls in the morning and twice as many in the afternoon. He sells 50 rolls. How many "
             "rolls are left?",
    "steps": ["In the afternoon the baker makes 2 * 24 = 48 rolls.",
              "In total he makes 24 + 48 = 72 rolls.",
              "After selling 50 rolls, 72 - 50 = 32 rolls are left.",
              "The answer is \\boxed{32}."],
}


def hub_prm_gap(name: str) -> tuple[bool, str]:
    """prmloop's reading of a Qwen2.5-Math-PRM checkpoint against its own remote code, on one example."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from prmloop.prm.config import PRMConfig
    from prmloop.prm.formats import load_reward_model

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(name)
    ex = EXAMPLE
    chat = tokenizer.apply_chat_template([{"role": "system", "content": ex["system"]},
                                          {"role": "user", "content": ex["query"]},
                                          {"role": "assistant", "content": "<extra_0>".join(ex["steps"]) + "<extra_0>"}],
                                         tokenize=False)
    ids = torch.tensor([tokenizer.encode(chat)], device=device)
    reference = AutoModel.from_pretrained(name, dtype=torch.float32, trust_remote_code=True).to(device).eval()
    with torch.no_grad():
        logits = reference(input_ids=ids)[0][0]  # (T, 2)
    expected = torch.softmax(logits[ids[0] == tokenizer.convert_tokens_to_ids("<extra_0>")].float(), -1)[:, 1].cpu()
    window = min(4096, reference.config.max_position_embeddings)
    del reference
    if device == "cuda":
        torch.cuda.empty_cache()
    prm = load_reward_model(name, PRMConfig(max_length=window)).to(device)
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": ex["system"]},
                                            {"role": "user", "content": ex["query"]}], tokenize=False,
                                           add_generation_prompt=True)
    got = torch.tensor(prm.score_steps([prompt], [ex["steps"]])[0])
    gap = (got - expected).abs().max().item()
    return gap < 1e-4, f"{name}: steps {[round(v, 4) for v in got.tolist()]}, max |prmloop - own code| {gap:.1e}"


def check_hub_prm(name: str | None) -> tuple[bool, str]:
    ok, last = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_prm_hub_formats.py",
                    "tests/test_prm_export.py"])
    if not ok or name is None:
        return ok, f"stand-ins: {last}" + ("" if name else " (no --hub-prm: the real checkpoint was not tried)")
    real_ok, detail = hub_prm_gap(name)
    return real_ok, f"stand-ins: {last}; {detail}"


def check_vllm() -> tuple[bool, str]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False, "vllm is not installed: pip install -e '.[vllm,dev]'"
    groups = ["not trainer and not recomputes", "trainer_with_a_sleeping_engine", "recomputes_old_logps"]
    results = [run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                    "tests/test_vllm_gpu.py", "-k", group]) for group in groups]
    return all(ok for ok, _ in results), " | ".join(last for _, last in results)


def check_wandb_under_launch() -> tuple[bool, str]:
    import torch
    from hub_fixtures import build_hub_model, write_gsm8k_file
    from wandb_records import offline_history

    processes = max(1, torch.cuda.device_count())
    work = Path(tempfile.mkdtemp(prefix="prmloop-gpu-wandb-"))
    model = build_hub_model("qwen2", work / "qwen", seed=0)
    write_gsm8k_file(work / "train.jsonl", n=32)
    labels = work / "labels.jsonl"
    labels.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "completions": [f"{i} + 1 = {i + 1}",
                                                                                        f"The answer is {i + 1}"],
                                          "labels": [True, i % 2 == 0]}) + "\n" for i in range(32)))
    sizes = ["--set", "data.task=gsm8k", "--set", f"data.source={work / 'train.jsonl'}", "--set",
             f"data.eval_source={work / 'train.jsonl'}", "--set", "data.n_eval=4", "--set", f"policy.model={model}",
             "--set", "policy.max_length=256", "--set", "policy.max_new_tokens=16", "--set", "prm.max_length=256",
             "--set", "grpo.mixed_precision=bf16", "--set", "prm.mixed_precision=bf16", "--set", "tracking.mode=offline"]
    launch = ["accelerate", "launch", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision",
              "bf16", "--dynamo_backend", "no", "-m", "prmloop"]
    grpo_ok, grpo_last = run(launch + ["grpo", "--policy", str(model), "--out", str(work / "grpo"), "--set",
                                       "grpo.steps=2", "--set", f"grpo.prompts_per_step={2 * processes}", "--set",
                                       "grpo.group_size=2", "--set", "grpo.supervision=outcome", "--set",
                                       "grpo.reward_source=rule", *sizes])
    prm_ok, prm_last = run(launch + ["prm", "train", "--data", str(labels), "--init", str(model), "--out",
                                     str(work / "prm"), "--set", "prm.epochs=1", "--set", "prm.batch_size=8", *sizes])
    grpo_runs = list((work / "grpo").rglob("offline-run-*"))
    prm_runs = list((work / "prm").rglob("offline-run-*"))
    grpo_keys = {key for row in offline_history(work / "grpo") for key in row} if grpo_ok else set()
    prm_keys = {key for row in offline_history(work / "prm") for key in row} if prm_ok else set()
    ok = (grpo_ok and prm_ok and len(grpo_runs) == 1 and len(prm_runs) == 1
          and any(k.startswith("train/") for k in grpo_keys) and any(k.startswith("prm/") for k in prm_keys))
    detail = (f"{processes} process(es): grpo {len(grpo_runs)} run(s), {sum(k.startswith('train/') for k in grpo_keys)}"
              f" train/* keys; prm train {len(prm_runs)} run(s)")
    return ok, detail if grpo_ok and prm_ok else f"{detail}; grpo: {grpo_last}; prm: {prm_last}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/gpu_checks.py", description=__doc__.splitlines()[0])
    parser.add_argument("--hub-prm", default=None, help="a Qwen2.5-Math-PRM checkpoint on the hub (or in its cache)")
    parser.add_argument("--items", default="1,2,4,5", help="which rows to run (comma-separated)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu_checks.py: no CUDA GPU is visible to torch; these checks are for a GPU box")
    checks = {"1": ("precision", check_precision), "2": ("hub PRM", lambda: check_hub_prm(args.hub_prm)),
              "4": ("vLLM pi_old", check_vllm), "5": ("W&B under accelerate launch", check_wandb_under_launch)}
    print(f"torch {torch.__version__} | {torch.cuda.get_device_name()} x {torch.cuda.device_count()}")
    print("| item | check | result | seconds | detail |")
    print("|---|---|---|---|---|")
    failed = False
    for item in args.items.split(","):
        name, check = checks[item.strip()]
        started = time.perf_counter()
        try:
            ok, detail = check()
        except Exception as err:  # noqa: BLE001 -- a check that crashes is a failed row, the others still run
            ok, detail = False, f"{type(err).__name__}: {str(err).splitlines()[0][:140] if str(err) else ''}"
        failed |= not ok
        print(f"| {item} | {name} | {'PASS' if ok else 'FAIL'} | {time.perf_counter() - started:.0f} | {detail} |",
              flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
