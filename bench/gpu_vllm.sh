#!/usr/bin/env bash
# vLLM rollouts (grpo.use_vllm, policy/vllm_backend.py) on one CUDA GPU: the GPU tests, then benchmark tables.
# Needs the extras: pip install -e '.[vllm,dev]' (and trl for the TRL row). Usage: bash bench/gpu_vllm.sh
# [--size tiny|0.5b] [--prompts N] [--group-size G] [--max-new-tokens N] [--rounds R] [--grpo-steps S] ...
#
# 1. tests/test_vllm_gpu.py, in two processes (vLLM's sleep-mode allocator serves one engine per process):
#    raw temperature-1 log-probs equal the policy's forward; vLLM's and HFBackend's sampling statistics agree within
#    4 standard errors; the same seeds give the same samples; sync_weights moves the engine to a changed model and to a
#    LoRA policy merged on the fly (greedy outputs identical to HF's); a GRPO run with a sleeping engine frees GPU
#    memory between steps and samples from the updated policy.
# 2. Benchmarks (the Python below, one process per engine), on a randomly initialised Qwen2 (--size 0.5b: Qwen2.5-0.5B's
#    shape in bf16, default; tiny: fp32) with the BPE tokenizer of tests/hub_fixtures.py, so nothing is downloaded.
#    Random weights sample almost uniformly, so nearly every row runs to max_new_tokens and every run generates about
#    the same number of tokens. Timings are medians over --rounds (sampling) or --grpo-steps (GRPO) after a warm-up.
#    - rollouts (mode prmloop): one batch (prompts x G rows) sampled by HFBackend and by VLLMBackend (no sleep): engine
#      start seconds, sampling seconds, generated tokens/s, mean completion length, mean log-prob per token, the
#      largest gap between the returned log-probs and the policy's own forward on the same tokens (pi_old against
#      pi_theta: about 1e-2 or less in bf16, about 1e-5 in fp32), and the seconds of one full weight push.
#    - GRPO steps (mode prmloop): GRPOTrainer (outcome supervision, rule reward, beta 0, micro-batches of 16 rows)
#      with each backend, vLLM with sleep on: step, sample and update seconds; wake-up and weight push count as sampling.
#    - raw vLLM (mode vllm): vllm.LLM.generate on the same rows from a saved copy of the same weights, unseeded and
#      without log-probs: the engine's own speed.
#    - TRL (mode trl): TRL's GRPOTrainer with vLLM colocated (sleep on) on the same questions and settings
#      (bench/grpo_trl.py times its phases), its default importance-sampling correction recomputing pi_old like prmloop's
#      default grpo.vllm_old_logps: recompute.
#    - summary: generated tokens/s and step seconds of all of them side by side. In the GRPO rows sampling includes the
#      weight push and the recomputed pi_old forward (prmloop's sample phase; TRL's _generate and its no-grad forward).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_SILENT=true TQDM_DISABLE=1 VLLM_LOGGING_LEVEL=WARNING
python -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('vllm', vllm.__version__, '| torch', torch.__version__, '|', torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_vllm_gpu.py -k "not trainer and not recomputes"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_vllm_gpu.py -k "trainer_with_a_sleeping_engine"
# pi_old: a bf16 engine beside fp32 trainer weights; recomputed pi_old gives rho = 1 at the first inner update
python -m pytest -q -p no:cacheprovider -m gpu tests/test_vllm_gpu.py -k "recomputes_old_logps"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
bench() {
python - --results "$RESULTS" "$@" <<'EOF'
import argparse
import copy
import json
import statistics
import sys
import tempfile
import time

import torch

sys.path[:0] = ["tests", "bench"]

from grpo_trl import medians, side_by_side  # noqa: E402
from hub_fixtures import build_hub_tokenizer  # noqa: E402
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from prmloop.data.arith import generate  # noqa: E402
from prmloop.data.config import DataConfig  # noqa: E402
from prmloop.data.tasks import get_task  # noqa: E402
from prmloop.policy.config import GRPOConfig, PolicyConfig  # noqa: E402
from prmloop.policy.grpo import GRPOTrainer, step_problem_indices  # noqa: E402
from prmloop.policy.logps import forward_logps  # noqa: E402
from prmloop.policy.rollout import HFBackend, encode_prompts, left_pad  # noqa: E402
from prmloop.policy.sampling import row_seed  # noqa: E402
from prmloop.policy.vllm_backend import VLLMBackend  # noqa: E402

SIZES = {  # name -> (Qwen2Config sizes, dtype)
    "tiny": ({"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2, "vocab_size": 512}, torch.float32),
    "0.5b": ({"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "vocab_size": 151936}, torch.bfloat16),
}


def random_policy(size: str):
    tokenizer = build_hub_tokenizer("qwen2")
    tokenizer.padding_side = "left"
    im_end, endoftext = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sizes, dtype = SIZES[size]
    config = Qwen2Config(**sizes, max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=endoftext,
                         eos_token_id=im_end, pad_token_id=endoftext)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(dtype=dtype, device="cuda").eval()
    model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], pad_token_id=endoftext)
    return model, tokenizer


def timed(fn, rounds: int):
    """The result of the last call and the median of ``rounds`` calls (after one warm-up call) in seconds."""
    result, seconds = fn(), []
    for _ in range(rounds):
        torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return result, statistics.median(seconds)


def batch_rows(tokenizer, args) -> tuple[list, list[list[int]], list[int]]:
    """The benchmark's questions, its rows (each prompt G times) and their seeds."""
    problems = generate(DataConfig(), args.prompts, "train")
    prompts = encode_prompts(tokenizer, [p.question + "\n" for p in problems])
    rows = [ids for ids in prompts for _ in range(args.group_size)]
    return problems, rows, [row_seed(0, 0, i, g) for i in range(len(prompts)) for g in range(args.group_size)]


def record(args, **row) -> None:
    """One row for the summary table (this script's --results file)."""
    with open(args.results, "a") as out:
        out.write(json.dumps(row) + "\n")


def max_logp_gap(model, tokenizer, rows, generation, chunk: int = 16) -> float:
    """Largest |sampling log-prob - policy forward log-prob| over generated tokens (chunked: the logits are big)."""
    gap = 0.0
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        mask = generation.completion_mask[part]
        with torch.no_grad():
            logp, _ = forward_logps(model, *left_pad(rows[part], tokenizer.pad_token_id, "cuda"),
                                    generation.completion_ids[part], mask)
        gap = max(gap, (logp.float() - generation.logp[part])[mask].abs().max().item())
    return gap


def rollout_rows(model, tokenizer, args) -> list[dict]:
    _, rows, seeds = batch_rows(tokenizer, args)
    backends = {"HFBackend": lambda: HFBackend(model, tokenizer, args.max_new_tokens),
                "VLLMBackend": lambda: VLLMBackend(model, tokenizer, args.max_new_tokens, max_model_len=args.max_len,
                                                   gpu_memory_utilization=args.memory, sleep=False)}
    table = []
    for name, build in backends.items():
        started = time.perf_counter()
        backend = build()
        start_s = time.perf_counter() - started
        generation, sample_s = timed(lambda backend=backend: backend.generate(rows, seeds), args.rounds)
        lengths = generation.completion_mask.sum(1).float()
        gap = max_logp_gap(model, tokenizer, rows, generation)
        row = {"backend": name, "start_s": start_s, "sample_s": sample_s, "tok_per_s": lengths.sum().item() / sample_s,
               "mean_length": lengths.mean().item(), "logp_per_token": (generation.logp.sum() / lengths.sum()).item(),
               "max_logp_gap": gap}
        if isinstance(backend, VLLMBackend):
            def push(backend=backend):  # what the next sampling after an optimizer step pays first
                backend.sync_weights(model)
                backend._wake_up_current()
            row["push_s"] = timed(push, args.rounds)[1]
            del backend
        table.append(row)
    return table


def grpo_rows(model, tokenizer, args) -> list[dict]:
    task = get_task(DataConfig())
    problems = generate(DataConfig(), 512, "train")
    policy_cfg = PolicyConfig(max_new_tokens=args.max_new_tokens, max_length=args.max_len)
    table = []
    for use_vllm in (False, True):
        cfg = GRPOConfig(prompts_per_step=args.prompts, group_size=args.group_size, supervision="outcome",
                         reward_source="rule", beta=0.0, lr=1e-6, use_vllm=use_vllm,
                         grad_accum=max(1, args.prompts * args.group_size // 16),  # (rows, T, vocab) logits are big
                         vllm_gpu_memory_utilization=args.memory, mixed_precision="no")
        trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, task)
        runs = []
        for step in range(args.grpo_steps + 1):
            batch = [problems[i] for i in step_problem_indices(len(problems), cfg.prompts_per_step, step, cfg.seed)]
            metrics = trainer.train_step(batch, step)
            if step:  # step 0 is a warm-up
                runs.append(metrics)
        table.append({"backend": "VLLMBackend (sleep)" if use_vllm else "HFBackend",
                      **{key: statistics.median(m[f"time/{key}"] for m in runs) for key in ("sample", "update")},
                      "step": statistics.median(m["step_time"] for m in runs),
                      "tok_per_s": statistics.median(m["tokens_per_second"] for m in runs),
                      "gap": statistics.median(m.get("sampling/sampling_logp_difference/mean", float("nan"))
                                               for m in runs)})
        del trainer
        torch.cuda.empty_cache()
    return table


def raw_vllm(args) -> None:
    """vllm.LLM.generate on the benchmark's rows from a saved copy of the policy: unseeded, no log-probs."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model, tokenizer = random_policy(args.size)
    _, rows, _ = batch_rows(tokenizer, args)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        del model
        torch.cuda.empty_cache()
        started = time.perf_counter()
        llm = LLM(model=directory, dtype=dtype, max_model_len=args.max_len, gpu_memory_utilization=args.memory, seed=0,
                  max_num_seqs=len(rows))
        start_s = time.perf_counter() - started
        params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=args.max_new_tokens)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in rows]
        outputs, sample_s = timed(lambda: llm.generate(prompts, params, use_tqdm=False), args.rounds)
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    print(f"raw vLLM: start {start_s:.1f} s, sampling {sample_s:.3f} s, {tokens / sample_s:.0f} generated tok/s")
    record(args, run="raw vLLM LLM.generate (unseeded, no log-probs)", tok_per_s=tokens / sample_s, sample=sample_s)


def trl_vllm(args) -> None:
    """TRL's GRPOTrainer with a colocated vLLM engine (sleep on), the GRPO rows' settings, its phases timed."""
    model, tokenizer = random_policy(args.size)
    problems, _, _ = batch_rows(tokenizer, args)
    answers = {p.question + "\n": p.answer for p in problems}
    task = get_task(DataConfig())

    def rule_reward(prompts, completions, **kwargs):
        return [float(task.is_correct(c, answers[p])) for p, c in zip(prompts, completions)]

    directory = tempfile.mkdtemp(prefix="trl-policy-")  # TRL's engine loads the policy by its name_or_path
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    dtype = next(model.parameters()).dtype
    del model
    torch.cuda.empty_cache()
    settings = {"prompts_per_step": args.prompts, "group_size": args.group_size, "max_new_tokens": args.max_new_tokens,
                "lr": 1e-6, "beta": 0.0, "temperature": 1.0, "seed": 0, "micro_batch": 16}
    trl_args = {"use_cpu": False, "use_vllm": True, "vllm_mode": "colocate", "vllm_enable_sleep_mode": True,
                "vllm_gpu_memory_utilization": args.memory, "vllm_max_model_length": args.max_len,
                "model_init_kwargs": {"dtype": dtype}}  # bf16 (0.5b) or fp32 weights, no autocast: as prmloop's
    rows = side_by_side(directory, tokenizer, settings, list(answers), rule_reward, args.grpo_steps, {},
                        torch.get_num_threads(), trl_args)
    name, runs = next(iter(rows.items()))
    result = medians(runs)
    print(f"{name} with vLLM: " + ", ".join(f"{key} {value:.3f}" for key, value in result.items()))
    sample = result["sample"] + result["reference"]  # β 0: "reference" is the recomputed π_old, as in prmloop's sample
    record(args, run=f"{name}, vLLM colocated (sleep)", tok_per_s=result["tokens"] / sample, step=result["step"],
           sample=sample)


def summary(args) -> None:
    print(f"\ngenerated tokens/s side by side (medians; {args.prompts} prompts x G={args.group_size}, "
          f"max_new_tokens {args.max_new_tokens}):")
    print("| run | generated tok/s | sample s | step s |")
    print("|---|---|---|---|")
    with open(args.results) as rows:
        for row in map(json.loads, rows):
            step = f"{row['step']:.3f}" if "step" in row else "-"
            print(f"| {row['run']} | {row['tok_per_s']:.0f} | {row['sample']:.3f} | {step} |")


def prmloop_tables(args) -> None:
    model, tokenizer = random_policy(args.size)
    print(f"policy: random Qwen2 '{args.size}' ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
          f"{next(model.parameters()).dtype}); batch {args.prompts} prompts x G={args.group_size}, "
          f"max_new_tokens {args.max_new_tokens}; {torch.cuda.get_device_name()}")
    print("| backend | start s | sample s | generated tok/s | mean length | logp/token | max logp gap | push s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rollout_rows(model, tokenizer, args):
        push = f"{r['push_s']:.3f}" if "push_s" in r else "-"
        print(f"| {r['backend']} | {r['start_s']:.1f} | {r['sample_s']:.3f} | {r['tok_per_s']:.0f} | "
              f"{r['mean_length']:.1f} | {r['logp_per_token']:.3f} | {r['max_logp_gap']:.2e} | {push} |")
        record(args, run=f"prmloop {r['backend']} (seeded, log-probs)", tok_per_s=r["tok_per_s"], sample=r["sample_s"])
    if args.grpo_steps:
        print(f"\nGRPO (outcome, rule reward, beta 0), median of {args.grpo_steps} steps after a warm-up step:")
        print("| backend | step s | sample s | update s | generated tok/s | mean |engine - trainer| logp |")
        print("|---|---|---|---|---|---|")
        for r in grpo_rows(model, tokenizer, args):
            print(f"| {r['backend']} | {r['step']:.3f} | {r['sample']:.3f} | {r['update']:.3f} | {r['tok_per_s']:.0f} "
                  f"| {r['gap']:.2e} |")
            record(args, run=f"prmloop GRPOTrainer, {r['backend']}", tok_per_s=r["tok_per_s"], step=r["step"],
                   sample=r["sample"], update=r["update"])


MODES = {"prmloop": prmloop_tables, "vllm": raw_vllm, "trl": trl_vllm, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/gpu_vllm.sh", description="vLLM rollouts against HFBackend")
    parser.add_argument("--mode", choices=sorted(MODES), default="prmloop", help="which table (one engine per process)")
    parser.add_argument("--results", required=True, help="JSON lines the summary table reads")
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--memory", type=float, default=0.3, help="grpo.vllm_gpu_memory_utilization")
    parser.add_argument("--rounds", type=int, default=3, help="timed sampling rounds (median kept)")
    parser.add_argument("--grpo-steps", type=int, default=3, help="timed GRPO steps per backend (0 = skip)")
    args = parser.parse_args()
    MODES[args.mode](args)


if __name__ == "__main__":
    main()
EOF
}
bench --mode prmloop "$@"
bench --mode vllm "$@"
if python -c "import trl" 2>/dev/null; then bench --mode trl "$@"; else echo "trl is not installed: no TRL row"; fi
bench --mode summary "$@"
