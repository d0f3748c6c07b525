"""Benchmark of one GRPO step on the embedded tiny policy: seconds and generated tokens/s, overhead, TRL for reference.

Run: ``python bench/grpo.py`` (``--quick`` for fewer steps). ``--reward-run 25`` instead runs 25 GRPO steps with
the default config and prints held-out accuracy before and after. The timing run prints one table:
- trainer steps for outcome supervision (rule reward; ORM reward) and process supervision (PRM reward): fastest-round
  seconds per step and generated tokens/s of the sampling phase; the rule-reward trainer once more with each prompt
  run once per row in the update ("unshared", the update before prompt sharing);
- the bare minimum on the same batch: generation (the sampling loop, no decoding or step alignment) + π_ref forward +
  π_θ forward/backward + optimizer step, and the trainer's overhead ratio (trainer step / bare minimum);
- HF ``model.generate`` on the same batch (what TRL's GRPOTrainer calls without vLLM) and, when ``import trl`` works,
  TRL's GRPOTrainer itself (rule reward, same batch, same model): both for reference only, prmloop never needs TRL.
The reward models are ``prm.model.StepRewardModel`` built from the policy (process mode and outcome mode).
The policy is the SFT checkpoint in ``runs/bench_sft`` when present, else a quick SFT is trained there first.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.tasks import get_task
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer, step_problem_indices
from prmloop.policy.logps import forward_logps
from prmloop.policy.losses import grpo_loss
from prmloop.policy.rollout import HFBackend, encode_prompts, left_pad, row_seed

ARITH = get_task(DataConfig())

def sft_policy(out: Path, quick: bool):
    """The SFT policy of runs/bench_sft (trained here with loop.stages.run_sft if absent)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (out / "model.safetensors").is_file():
        from prmloop.loop.config import load_config
        from prmloop.loop.stages import run_sft

        cfg = load_config(None, ["sft.steps=300"] if quick else [])
        print(f"training an SFT policy into {out} ...")
        run_sft(cfg, str(out))
    return AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)


def batch_of(problems, cfg: GRPOConfig, step: int):
    return [problems[i] for i in step_problem_indices(len(problems), cfg.prompts_per_step, step, cfg.seed)]


def trainer_runner(model, tokenizer, cfg: GRPOConfig, policy_cfg: PolicyConfig, scorer, problems):
    """One trainer step per call: step, sample and score seconds, generated tokens/s."""
    trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, ARITH, scorer)

    def run(step: int) -> dict:
        row = trainer.train_step(batch_of(problems, cfg, step), step)
        return {"step_s": row["step_time"], "sample_s": row["time/sample"], "score_s": row["time/score"],
                "tokens_per_s": row["tokens_per_second"]}

    return run


def unshared(runner):
    """``runner`` with each prompt run once per row in the update (``forward_logps(share_prompts=False)``): the
    update before prompt sharing, for the same-run comparison."""
    from unittest import mock

    from prmloop.policy import grpo, logps

    def full_forward(*args, **kwargs):
        return logps.forward_logps(*args, **{**kwargs, "share_prompts": False})

    def run(step: int) -> dict:
        with mock.patch.object(grpo, "forward_logps", full_forward):
            return runner(step)

    return run


def bare_runner(model, tokenizer, cfg: GRPOConfig, policy_cfg: PolicyConfig, problems):
    """generate + π_ref forward + π_θ forward/backward + optimizer step on the trainer's batch, nothing else."""
    policy, reference = copy.deepcopy(model).eval(), copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    backend = HFBackend(policy, tokenizer, policy_cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                        cfg.generation_batch_size)

    def run(step: int) -> dict:
        batch = batch_of(problems, cfg, step)
        prompt_ids = encode_prompts(tokenizer, [policy_cfg.prompt_template.replace("{question}", p.question) for p in batch])
        rows = [ids for ids in prompt_ids for _ in range(cfg.group_size)]
        seeds = [row_seed(cfg.seed, step, i // cfg.group_size, i % cfg.group_size) for i in range(len(rows))]
        started = time.perf_counter()
        generation = backend.generate(rows, seeds)
        generated = time.perf_counter()
        prompt, prompt_mask = left_pad(rows, tokenizer.pad_token_id, "cpu")
        with torch.no_grad():
            ref_logp, _ = forward_logps(reference, prompt, prompt_mask, generation.completion_ids,
                                        generation.completion_mask)
        logp, _ = forward_logps(policy, prompt, prompt_mask, generation.completion_ids, generation.completion_mask)
        advantages = torch.randn(len(rows), 1)
        loss, _ = grpo_loss(logp, generation.logp, ref_logp, advantages, generation.completion_mask, 0.2, 0.04)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"step_s": time.perf_counter() - started, "sample_s": generated - started,
                "tokens_per_s": generation.completion_mask.sum().item() / (generated - started)}

    return run


def hf_generate_runner(model, tokenizer, cfg: GRPOConfig, policy_cfg: PolicyConfig, problems):
    """HF ``model.generate`` (sampling, KV cache) on the same batch: the generation TRL's GRPOTrainer uses."""
    model = copy.deepcopy(model).eval()

    def run(step: int) -> dict:
        batch = batch_of(problems, cfg, step)
        prompts = [policy_cfg.prompt_template.replace("{question}", p.question) for p in batch for _ in range(cfg.group_size)]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        started = time.perf_counter()
        with torch.no_grad():
            output = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                    max_new_tokens=policy_cfg.max_new_tokens, do_sample=True, temperature=1.0,
                                    top_p=1.0, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
        elapsed = time.perf_counter() - started
        tokens = (output[:, inputs["input_ids"].shape[1] :] != tokenizer.pad_token_id).sum().item()
        return {"sample_s": elapsed, "tokens_per_s": tokens / elapsed}

    return run


def interleaved(runners: dict, steps: int) -> dict[str, dict]:
    """Run every runner once per round (round 0 is a warm-up); per runner and key, the fastest round's value
    (the least disturbed by other jobs on a shared machine; the highest for rates)."""
    rows: dict[str, list[dict]] = {name: [] for name in runners}
    for step in range(steps + 1):
        for name, run in runners.items():
            row = run(step)
            if step:
                rows[name].append(row)
    return {name: {key: (max if key == "tokens_per_s" else min)(r[key] for r in runs) for key in runs[0]}
            for name, runs in rows.items()}


def time_trl(model, tokenizer, cfg: GRPOConfig, policy_cfg: PolicyConfig, problems, steps: int) -> dict | None:
    """TRL's GRPOTrainer (HF generate inside) on the same batch shape and reward; None when TRL is not importable."""
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError:
        return None
    model = copy.deepcopy(model)
    by_prompt = {policy_cfg.prompt_template.replace("{question}", p.question): p for p in problems}
    generated = {"seconds": [], "tokens": []}
    original_generate = model.generate

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        output = original_generate(*args, **kwargs)
        generated["seconds"].append(time.perf_counter() - started)
        new = output[:, kwargs["input_ids"].shape[1] :] if "input_ids" in kwargs else output
        generated["tokens"].append((new != tokenizer.pad_token_id).sum().item())
        return output

    model.generate = timed_generate
    step_seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds.append(time.perf_counter() - self.started)

    def rule_reward(prompts, completions, **kwargs):
        return [float(ARITH.is_correct(c, by_prompt[p].answer)) for p, c in zip(prompts, completions)]

    with tempfile.TemporaryDirectory() as out:
        args = trl.GRPOConfig(output_dir=out, per_device_train_batch_size=cfg.prompts_per_step * cfg.group_size,
                              num_generations=cfg.group_size, max_completion_length=policy_cfg.max_new_tokens,
                              max_steps=steps + 1, learning_rate=cfg.lr, beta=cfg.beta, temperature=cfg.temperature,
                              use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", seed=cfg.seed,
                              gradient_checkpointing=False, bf16=False)  # float32, no recomputation, as prmloop here
        trainer = trl.GRPOTrainer(model=model, reward_funcs=rule_reward, args=args, processing_class=tokenizer,
                                  train_dataset=Dataset.from_dict({"prompt": list(by_prompt)}),
                                  callbacks=[StepTimer()])
        trainer.train()
    rates = [t / s for t, s in zip(generated["tokens"][1:], generated["seconds"][1:])]
    return {"step_s": min(step_seconds[1:]), "sample_s": min(generated["seconds"][1:]), "tokens_per_s": max(rates),
            "version": trl.__version__}


def reward_run(model, tokenizer, steps: int) -> None:
    """GRPO with the default config (outcome supervision, rule reward) from the SFT policy; held-out accuracy of
    greedy decoding and of 4 samples per problem at temperature 1 (the rule reward), before and after."""
    from prmloop.data.prompts import Prompter
    from prmloop.policy.accuracy import heldout_accuracy

    policy_cfg, cfg = PolicyConfig(), GRPOConfig(steps=steps, supervision="outcome", reward_source="rule")
    held_out = generate(DataConfig(), DataConfig().n_eval, "eval")

    def evaluate(policy) -> tuple[float, float]:
        prompter = Prompter.of(policy_cfg, tokenizer)
        return (heldout_accuracy(policy, tokenizer, prompter, ARITH, held_out, policy_cfg.max_new_tokens),
                heldout_accuracy(policy, tokenizer, prompter, ARITH, held_out, policy_cfg.max_new_tokens,
                                 temperature=1.0, samples=4, seed=123))

    before = evaluate(model)
    trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, ARITH)
    started = time.perf_counter()
    history = trainer.train(generate(DataConfig(), DataConfig().n_train, "train"))
    seconds = time.perf_counter() - started
    after = evaluate(trainer.policy)
    print(f"reward run: {steps} steps x {cfg.prompts_per_step} prompts x G={cfg.group_size}, lr {cfg.lr}, "
          f"{seconds:.0f} s; final kl {history[-1].get('kl', 0):.4f}")
    print(f"held-out ({len(held_out)} problems) greedy accuracy {before[0]:.3f} -> {after[0]:.3f}; "
          f"sampled reward (T=1, 4 per problem) {before[1]:.4f} -> {after[1]:.4f}")


def reward_models(model, tokenizer, max_length: int):
    """A process-mode PRM and an outcome-mode ORM built from the policy (prm.model.StepRewardModel)."""
    from prmloop.prm.model import StepRewardModel

    return (StepRewardModel.from_model(copy.deepcopy(model), tokenizer, "process", max_length),
            StepRewardModel.from_model(copy.deepcopy(model), tokenizer, "outcome", max_length))


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed steps per row instead of 5")
    parser.add_argument("--policy", default=str(ROOT / "runs" / "bench_sft"), help="SFT policy dir (made if absent)")
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--reward-run", type=int, default=0, metavar="STEPS",
                        help="instead of timing: run this many GRPO steps and report held-out accuracy before/after")
    args = parser.parse_args()
    steps = 2 if args.quick else 5
    model, tokenizer = sft_policy(Path(args.policy), args.quick)
    if args.reward_run:
        reward_run(model, tokenizer, args.reward_run)
        return
    policy_cfg = PolicyConfig()
    problems = generate(DataConfig(), DataConfig().n_train, "train")
    base = {"prompts_per_step": args.prompts_per_step, "group_size": args.group_size}
    prm, orm = reward_models(model, tokenizer, policy_cfg.max_length)
    print(f"batch: {args.prompts_per_step} prompts x G={args.group_size}, max_new_tokens {policy_cfg.max_new_tokens}, "
          f"{torch.get_num_threads()} torch threads, fastest of {steps} interleaved rounds after a warm-up")
    outcome = {**base, "supervision": "outcome"}
    runners = {
        "trainer outcome (rule)": trainer_runner(model, tokenizer, GRPOConfig(**outcome, reward_source="rule"),
                                                 policy_cfg, None, problems),
        "trainer outcome (ORM)": trainer_runner(model, tokenizer, GRPOConfig(**outcome, reward_source="orm"),
                                                policy_cfg, orm, problems),
        "trainer process (PRM)": trainer_runner(model, tokenizer, GRPOConfig(**base, supervision="process",
                                                reward_source="prm"), policy_cfg, prm, problems),
        "trainer outcome (rule), LoRA 16": trainer_runner(model, tokenizer, GRPOConfig(**outcome, reward_source="rule"),
                                                          PolicyConfig(lora_r=16), None, problems),
        "trainer outcome (rule), unshared": unshared(trainer_runner(
            model, tokenizer, GRPOConfig(**outcome, reward_source="rule"), policy_cfg, None, problems)),
        "bare minimum": bare_runner(model, tokenizer, GRPOConfig(**base), policy_cfg, problems),
        "HF generate (TRL's sampler)": hf_generate_runner(model, tokenizer, GRPOConfig(**base), policy_cfg, problems),
    }
    results = interleaved(runners, steps)
    trl_result = time_trl(model, tokenizer, GRPOConfig(**base, supervision="outcome", reward_source="rule"),
                          policy_cfg, problems, steps)
    if trl_result is not None:
        results[f"TRL {trl_result.pop('version')} GRPOTrainer"] = trl_result
    print_table(results, trl_result)


def print_table(results: dict[str, dict], trl_result: dict | None) -> None:
    print(f"| {'run':<32} | step s | sample s | score s | update s | generated tok/s |")
    print(f"|{'-' * 34}|--------|----------|---------|----------|-----------------|")
    for name, row in results.items():
        update = row["step_s"] - row["sample_s"] - row.get("score_s", 0.0) if "step_s" in row else None
        print(f"| {name:<32} | {fmt(row.get('step_s'), '6.3f')} | {fmt(row.get('sample_s'), '8.3f')} | "
              f"{fmt(row.get('score_s'), '7.3f')} | {fmt(update, '8.3f')} | {fmt(row.get('tokens_per_s'), '15.0f')} |")
    rule, orm, process = (results[f"trainer {k}"] for k in ("outcome (rule)", "outcome (ORM)", "process (PRM)"))
    bare, hf = results["bare minimum"], results["HF generate (TRL's sampler)"]
    print(f"process / outcome(rule) step time: {process['step_s'] / rule['step_s']:.2f}   "
          f"process / outcome(ORM): {process['step_s'] / orm['step_s']:.2f}   (target <= 1.10)")
    print(f"trainer overhead: outcome(rule) step / bare minimum = {rule['step_s'] / bare['step_s']:.2f}x (target <= 1.25x)")
    print(f"generated tok/s vs HF generate: {rule['tokens_per_s'] / hf['tokens_per_s']:.2f}x", end="")
    if trl_result is not None:
        print(f"   vs TRL GRPOTrainer: {rule['tokens_per_s'] / trl_result['tokens_per_s']:.2f}x (target >= 2x)")
        print(f"whole step vs TRL GRPOTrainer: {trl_result['step_s'] / rule['step_s']:.2f}x faster (target >= 1.5x)")
    else:
        print("   (TRL not importable: HF generate is the proxy for TRL's sampler; target >= 2x)")


if __name__ == "__main__":
    main()
