"""Tests for loop/efficiency.py (S3): tokens at each evaluation, steps and tokens to reach the outcome arm's final
accuracy, and accuracy at its token budget, with hand-computed numbers."""

from pathlib import Path

from test_report import OUTCOME, PROCESS

from prmloop.loop.efficiency import accuracy_at_budget, efficiency_section, seed_reach
from prmloop.loop.report_stats import RunInfo, group_arms, token_totals
from prmloop.utils.jsonl import append_jsonl


def _run(run_dir: Path, accuracy: list[float], rm_tokens: list[float], rl_tokens_per_step: float) -> Path:
    """Rounds 0..2 of 2 RL steps each: a curve point at steps 1, 3 and each round's evaluation at 2, 4."""
    rows = [{"kind": "eval", "round": 0, "rl_step": 0, "accuracy": accuracy[0], "tokens_reward_model": rm_tokens[0]}]
    for step in range(1, 5):
        round_index = (step + 1) // 2
        rows.append({"kind": "rl", "round": round_index, "rl_step": step, "num_tokens": rl_tokens_per_step * step})
        row = {"kind": "eval", "round": round_index, "rl_step": step, "accuracy": accuracy[step]}
        if step % 2 == 0:
            row["tokens_reward_model"] = rm_tokens[round_index]
        rows.append(row)
    append_jsonl(run_dir / "metrics.jsonl", rows)
    return run_dir


def test_token_totals_by_hand(tmp_path: Path):
    run = _run(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5], [1000, 1000, 1500], 100)
    from prmloop.loop.report_stats import load_eval_rows

    totals = token_totals(load_eval_rows(run), load_eval_rows(run, "rl"))
    # step 0: 0 + 1000; steps 1, 2 (round 1): 100 / 200 + 1000; steps 3, 4 (round 2): 300 / 400 + 1500
    assert totals == {0: 1000, 1: 1100, 2: 1200, 3: 1800, 4: 1900}


def test_reach_and_budget_by_hand(tmp_path: Path):
    runs = [RunInfo("outcome", s, run_dir=_run(tmp_path / f"o{s}", acc, [0, 0, 0], 100), **OUTCOME)
            for s, acc in ((0, [0.2, 0.2, 0.3, 0.3, 0.4]), (1, [0.2, 0.3, 0.3, 0.4, 0.4]))]
    runs += [RunInfo("process", s, run_dir=_run(tmp_path / f"p{s}", acc, [150, 150, 250], 100), **PROCESS)
             for s, acc in ((0, [0.2, 0.4, 0.4, 0.5, 0.5]), (1, [0.2, 0.3, 0.3, 0.3, 0.3]))]
    outcome, process = group_arms(runs)
    # target = the outcome arm's final mean 0.4; process seed 0 reaches it at step 1 (100 + 150 tokens), seed 1 never
    assert seed_reach(process, 0.4) == [(1, 250.0), None]
    assert seed_reach(outcome, 0.4) == [(4, 400.0), (3, 300.0)]
    # budget 400 tokens (the outcome arm's final total): process seed 0's last evaluation within it is step 2 (200 +
    # 150 = 350; step 3 costs 300 + 250 = 550) -> 0.4; seed 1 -> 0.3
    assert accuracy_at_budget(process, 400) == [0.4, 0.3]
    text = "\n".join(efficiency_section([outcome, process]))
    assert "Target: `outcome`'s final seed-mean accuracy, 0.400." in text and "Budget: the outcome arm's final total, 400" in text
    # process: 1/2 seeds reach it, at step 1.0 (one seed, no CI), 250 tokens; at the budget [0.4, 0.3] -> 0.350 ± 0.635;
    # paired differences vs the outcome arm's [0.4, 0.4]: [0.0, -0.1] -> -0.050 ± 0.635
    assert "| process | 1/2 | 1.0 | 250 | 0.350 ± 0.635 | -0.050 ± 0.635 |" in text
