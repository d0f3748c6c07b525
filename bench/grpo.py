"""Benchmark of one GRPO step on the embedded tiny policy: prmloop next to TRL's GRPOTrainer, phase by phase.

Run: ``python bench/grpo.py`` (``--quick``: 3 timed steps; ``--parts trl,lengths,table`` picks the tables;
``--threads`` pins torch's threads, 1 by default). ``--reward-run 25`` instead runs 25 GRPO steps with the default
config and prints held-out accuracy before and after. Timings are medians over the timed steps, after a warm-up step.
- trl: TRL's GRPOTrainer and prmloop's trainer (padded; ``grpo.padding_free``; padding-free with prefix trees off)
  on the same questions with the same settings (rule reward, β 0.04, G, 64 new tokens, ``--temperature``, float32,
  no gradient checkpointing, one micro-batch), one step of each in turn (``bench/grpo_trl.py``): step seconds split
  into sampling, scoring, reference log-probs, update (and TRL's other preparation), generated tokens/s, the
  step-time ratio to TRL's, and the share of tokens the prefix trees held (``--tree-share`` sets the most at which
  they run, ``policy.logps.TREE_SHARE``).
- lengths: the update phase alone (π_ref forward, π_θ forward/backward, optimizer step) on a batch whose
  completions are mostly short (12-28 tokens) with 1, 2, 4 or 8 of each group's G rows 120 tokens long, padded
  and padding-free, against the real and the padded token counts.
- table: trainer variants (rule, ORM, PRM rewards; LoRA; prompts unshared; padding-free), the bare minimum (generation
  + π_ref forward + π_θ forward/backward + optimizer step) and HF ``model.generate`` on the same batch.
The reward models are ``prm.model.StepRewardModel`` built from the policy (process mode and outcome mode).
The policy is the SFT checkpoint in ``runs/bench_sft`` when present, else a quick SFT is trained there first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.tasks import get_task
from prmloop.policy import logps
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer, step_problem_indices
from prmloop.policy.logps import forward_logps
from prmloop.policy.losses import grpo_loss
from prmloop.policy.rollout import HFBackend, Rollout, encode_prompts, left_pad
from prmloop.policy.sampling import row_seed

sys.path.insert(0, str(Path(__file__).parent))
from grpo_trl import PHASES, medians, prmloop_runner, side_by_side

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
    """One trainer step per call (``bench/grpo_trl.py``): step seconds and phases, generated tokens/s."""
    trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, ARITH, scorer)
    return prmloop_runner(trainer, lambda step: batch_of(problems, cfg, step))


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
        return {"step": time.perf_counter() - started, "sample": generated - started,
                "update": time.perf_counter() - generated,
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
        return {"sample": elapsed, "tokens_per_s": tokens / elapsed}

    return run


def interleaved(runners: dict, steps: int) -> dict[str, dict]:
    """Run every runner once per round (round 0 is a warm-up); per runner and key, the median over the timed rounds."""
    rows: dict[str, list[dict]] = {name: [] for name in runners}
    for step in range(steps + 1):
        for name, run in runners.items():
            row = run(step)
            if step:
                rows[name].append(row)
    return {name: medians(runs) for name, runs in rows.items()}


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


def print_phases(results: dict[str, dict], baseline: str | None = None) -> None:
    """One row per run: median step seconds and phases, generated tokens/s, and the speed-up over ``baseline``."""
    print("| run | step s | sample s | score s | reference s | update s | other s | generated tok/s | vs TRL |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        ratio = results[baseline]["step"] / row["step"] if baseline and "step" in row else None
        cells = [fmt(row.get(key), ".3f") for key in ("step", *PHASES)]
        print(f"| {name} | {' | '.join(cells)} | {fmt(row.get('tokens_per_s'), ',.0f')} | "
              f"{fmt(ratio, '.2f')}{'x' if ratio else ''} |")


def trl_table(model, tokenizer, args, policy_cfg: PolicyConfig, problems) -> None:
    """prmloop (padded, padding-free) and TRL's GRPOTrainer on the same questions, one step of each in turn."""
    questions = problems[: args.prompts_per_step]  # every step, every runner: these questions
    prompts = [policy_cfg.prompt_template.replace("{question}", p.question) for p in questions]
    answers = {prompt: p.answer for prompt, p in zip(prompts, questions)}
    settings = {"prompts_per_step": args.prompts_per_step, "group_size": args.group_size, "beta": 0.04, "lr": 5e-5,
                "max_new_tokens": policy_cfg.max_new_tokens, "temperature": 1.0, "seed": 0}

    def rule_reward(prompts, completions, **kwargs):
        return [float(ARITH.is_correct(c, answers[p])) for p, c in zip(prompts, completions)]

    runners, shares = {}, []
    for name, padding_free, trees in (("prmloop", False, False), ("prmloop, grpo.padding_free", True, True),
                                      ("prmloop, grpo.padding_free, no prefix trees", True, False)):
        cfg = GRPOConfig(prompts_per_step=args.prompts_per_step, group_size=args.group_size, beta=settings["beta"],
                         lr=settings["lr"], supervision="outcome", reward_source="rule", padding_free=padding_free,
                         temperature=args.temperature)
        trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, ARITH)
        runners[name] = prmloop_runner(trainer, lambda step: questions)
        if padding_free:
            runners[name] = with_trees(runners[name], trees, shares if trees else [])
    rows = side_by_side(model, tokenizer, {**settings, "temperature": args.temperature}, prompts, rule_reward,
                        args.steps, runners, args.threads)
    if rows is None:
        print("TRL is not importable (pip install trl): no side-by-side table")
        return
    results = {name: medians(runs) for name, runs in rows.items()}
    trl_name = next(iter(results))
    print(f"\nprmloop vs {trl_name}: {args.prompts_per_step} prompts x G={args.group_size}, "
          f"{policy_cfg.max_new_tokens} new tokens, temperature {args.temperature}, beta 0.04, float32, medians of "
          f"{args.steps} interleaved steps")
    print_phases(results, trl_name)
    if shares:
        print(f"prefix trees held {min(shares):.0%}-{max(shares):.0%} of the prompt-once layout's tokens in these steps' "
              f"forwards (trees run at most {logps.TREE_SHARE:.0%})")


def with_trees(runner, trees: bool, shares: list[float]):
    """``runner`` with the padding-free forwards' prefix trees on (where they pay) or off; ``shares`` collects each
    forward's tree tokens / prompt-once tokens."""
    from unittest import mock

    from prmloop.policy.prefix_tree import GroupTrees

    def counted(prompt_ids, prompt_mask, completion_ids, completion_mask, groups, limit=None):
        grouped = GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, groups)  # whole, to measure
        once = sum(len(prompt) for prompt in grouped.prompts) + int((completion_mask.sum(1) - 1).clamp(min=0).sum())
        shares.append(grouped.num_tokens() / once)
        grouped.complete = limit is None or grouped.num_tokens() <= limit
        return grouped

    def run(step: int) -> dict:
        with mock.patch.object(logps, "TREE_SHARE", logps.TREE_SHARE if trees else -1.0), \
                mock.patch.object(logps, "GroupTrees", counted):
            return runner(step)

    return run


def made_up_rollout(prompt_ids: list[list[int]], group_size: int, lengths: list[int], vocab: int, seed: int) -> Rollout:
    """A rollout of these prompts (each G times) with random completion tokens of ``lengths`` (one per row)."""
    generator = torch.Generator().manual_seed(seed)
    prompt, prompt_mask = left_pad([ids for ids in prompt_ids for _ in range(group_size)], 0, "cpu")
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    ids = torch.randint(3, vocab, mask.shape, generator=generator) * mask
    logp = -torch.rand(mask.shape, generator=generator) * mask
    return Rollout(prompt, prompt_mask, ids, mask, logp, torch.ones(len(lengths), dtype=torch.bool),
                   [""] * len(lengths), [[] for _ in lengths], [[] for _ in lengths])


def lengths_table(model, tokenizer, args, policy_cfg: PolicyConfig, problems) -> None:
    """The update phase, padded and padding-free, as more of each group's completions are long."""
    cfg = GRPOConfig(prompts_per_step=args.prompts_per_step, group_size=args.group_size, lr=1e-6, supervision="outcome",
                     reward_source="rule")
    trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, cfg, policy_cfg, ARITH)
    prompt_ids = encode_prompts(tokenizer, [trainer.prompter(p.question) for p in problems[: args.prompts_per_step]])
    print(f"\nupdate phase (pi_ref forward, pi_theta forward/backward, optimizer step), {args.prompts_per_step} prompts "
          f"x G={args.group_size}: completions of 12-28 tokens, some 120; medians of {args.steps} interleaved repeats")
    print("| long rows per group | real tokens | padded tokens | update s padded | update s padding-free | "
          "padded / padding-free |")
    print("|---|---|---|---|---|---|")
    short = torch.Generator().manual_seed(1)
    for long in (1, 2, 4, 8):
        lengths = [120 if i % args.group_size < long else int(torch.randint(12, 29, (1,), generator=short))
                   for i in range(args.prompts_per_step * args.group_size)]
        rollout = made_up_rollout(prompt_ids, args.group_size, lengths, len(tokenizer), seed=long)
        advantages = torch.randn(rollout.completion_mask.shape) * rollout.completion_mask  # (B, T)
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.steps + 1):
            for padding_free in (False, True):
                trainer.cfg.padding_free = padding_free
                started = time.perf_counter()
                trainer._update(rollout, advantages)
                if repeat:
                    seconds[padding_free].append(time.perf_counter() - started)
        real = int(rollout.prompt_mask.sum() + rollout.completion_mask.sum())
        padded = rollout.prompt_mask.numel() + rollout.completion_mask.numel()
        padded_s, free_s = (statistics.median(seconds[key]) for key in (False, True))
        print(f"| {long} of {args.group_size} | {real:,} | {padded:,} | {padded_s:.3f} | {free_s:.3f} | "
              f"{padded_s / free_s:.2f}x |")


def variants_table(model, tokenizer, args, policy_cfg: PolicyConfig, problems) -> None:
    """Trainer variants, the bare minimum and HF generate on each step's batch, interleaved."""
    base = {"prompts_per_step": args.prompts_per_step, "group_size": args.group_size}
    prm, orm = reward_models(model, tokenizer, policy_cfg.max_length)
    outcome = {**base, "supervision": "outcome"}
    rule = GRPOConfig(**outcome, reward_source="rule")
    runners = {
        "trainer outcome (rule)": trainer_runner(model, tokenizer, rule, policy_cfg, None, problems),
        "trainer outcome (rule), padding-free": trainer_runner(
            model, tokenizer, GRPOConfig(**outcome, reward_source="rule", padding_free=True), policy_cfg, None,
            problems),
        "trainer outcome (ORM)": trainer_runner(model, tokenizer, GRPOConfig(**outcome, reward_source="orm"),
                                                policy_cfg, orm, problems),
        "trainer process (PRM)": trainer_runner(model, tokenizer, GRPOConfig(**base, supervision="process",
                                                reward_source="prm"), policy_cfg, prm, problems),
        "trainer outcome (rule), LoRA 16": trainer_runner(model, tokenizer, rule, PolicyConfig(lora_r=16), None,
                                                          problems),
        "trainer outcome (rule), unshared": unshared(trainer_runner(model, tokenizer, rule, policy_cfg, None,
                                                                    problems)),
        "bare minimum": bare_runner(model, tokenizer, GRPOConfig(**base), policy_cfg, problems),
        "HF generate (TRL's sampler)": hf_generate_runner(model, tokenizer, GRPOConfig(**base), policy_cfg, problems),
    }
    results = interleaved(runners, args.steps)
    print(f"\ntrainer variants: each step's batch of {args.prompts_per_step} prompts x G={args.group_size}, medians of "
          f"{args.steps} interleaved rounds after a warm-up")
    print_phases(results)
    rule, orm, process, bare = (results[name] for name in ("trainer outcome (rule)", "trainer outcome (ORM)",
                                                           "trainer process (PRM)", "bare minimum"))
    print(f"process / outcome(rule) step time: {process['step'] / rule['step']:.2f}   "
          f"process / outcome(ORM): {process['step'] / orm['step']:.2f}   (target <= 1.10)")
    print(f"trainer overhead: outcome(rule) step / bare minimum = {rule['step'] / bare['step']:.2f}x (target <= 1.25x)")
    hf = results["HF generate (TRL's sampler)"]
    print(f"generated tok/s vs HF generate: {rule['tokens_per_s'] / hf['tokens_per_s']:.2f}x")


PARTS = {"trl": trl_table, "lengths": lengths_table, "table": variants_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps per row instead of 5")
    parser.add_argument("--policy", default=str(ROOT / "runs" / "bench_sft"), help="SFT policy dir (made if absent)")
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, pinned for every run")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the trl table's runs")
    parser.add_argument("--tree-share", type=float, default=logps.TREE_SHARE,
                        help="most share of the prompt-once tokens at which padding-free forwards use prefix trees")
    parser.add_argument("--parts", default="trl,lengths,table", help=f"comma-separated tables of {sorted(PARTS)}")
    parser.add_argument("--reward-run", type=int, default=0, metavar="STEPS",
                        help="instead of timing: run this many GRPO steps and report held-out accuracy before/after")
    args = parser.parse_args()
    args.steps = 3 if args.quick else 5
    logps.TREE_SHARE = args.tree_share
    torch.set_num_threads(args.threads)
    model, tokenizer = sft_policy(Path(args.policy), args.quick)
    if args.reward_run:
        reward_run(model, tokenizer, args.reward_run)
        return
    policy_cfg = PolicyConfig()
    problems = generate(DataConfig(), DataConfig().n_train, "train")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; policy {args.policy}")
    for part in args.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"--parts: unknown table {part!r}; choose from {sorted(PARTS)}")
        PARTS[part](model, tokenizer, args, policy_cfg, problems)


if __name__ == "__main__":
    main()
