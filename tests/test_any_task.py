"""End to end on a dataset task with hub-style models: GSM8K through SFT, MC labels, the comparison and the configs.

Everything is built offline here: a tiny random Qwen2 (ChatML chat template, two EOS ids) and Llama (BOS, no pad)
with BPE tokenizers (tests/hub_fixtures.py), and GSM8K-format files.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_fixtures import build_hub_model, gsm8k_rows, write_gsm8k_file

from prmloop.loop.cli import main
from prmloop.loop.config import load_config
from prmloop.utils.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "WANDB_SILENT": "true", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}


def _write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_hub_model("qwen2", tmp_path_factory.mktemp("qwen2"), seed=0)


def _gsm8k_config(tmp_path: Path, model: Path, source: Path, **sections) -> dict:
    config = {
        "name": "gsm8k-test",
        "data": {"task": "gsm8k", "source": str(source), "n_train": 64, "n_eval": 16},
        "policy": {"model": str(model), "chat_template": True, "max_length": 256, "max_new_tokens": 24},
        "sft": {"steps": 0},
        "prm": {"epochs": 1, "batch_size": 4, "max_length": 256},
        "grpo": {"prompts_per_step": 2, "group_size": 2},
        "loop": {"rounds": 2, "rl_steps_per_round": 1, "labeller": "mc", "mc_rollouts": 2, "label_problems": 2,
                 "init_label_problems": 3, "samples_per_problem": 2, "eval_problems": 3, "eval_k": 2,
                 "eval_mc_solutions": 3, "cache_dir": str(tmp_path / "cache")},
        "compare": {"arms": ["process-prm-iterative", "outcome-rule-fixed"], "seeds": 1},
        "tracking": {"mode": "offline"},
    }
    for name, values in sections.items():
        config[name].update(values)
    return config


@pytest.mark.slow
def test_compare_runs_on_gsm8k_with_a_chat_model(tmp_path, qwen_dir):
    source = write_gsm8k_file(tmp_path / "gsm8k.jsonl", n=40)
    config = _write_config(tmp_path / "gsm8k.yaml", _gsm8k_config(tmp_path, qwen_dir, source))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prmloop", "compare", "--config", str(config), "--out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "process-prm-iterative" in report and "outcome-rule-fixed" in report
    for arm in ("process-prm-iterative", "outcome-rule-fixed"):
        run = out / "arms" / arm / "seed0"
        assert list((run / "wandb").glob("offline-run-*")), f"no W&B run for {arm}"
        rows = [row for _, row in read_jsonl(run / "metrics.jsonl")]
        evals = [row for row in rows if row["kind"] == "eval" and "accuracy" in row]
        assert [row["round"] for row in evals] == [0, 1, 2]
        assert [row["rl_step"] for row in rows if row["kind"] == "rl"] == [1, 2]  # two RL steps
        assert all(row["pass_at_2"] is not None and row["prm_labelled_samples"] == 3 for row in evals)
    labels = [row for _, row in read_jsonl(out / "shared" / "labels.jsonl")]
    assert labels and all(isinstance(row["final_answer_correct"], bool) for row in labels)
    prompt = labels[0]["prompt"]
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")  # chat template
    # retrained before round 2 on MC labels of the policy after round 1's GRPO step (not before round 1)
    assert sorted(p.name for p in (out / "arms" / "process-prm-iterative" / "seed0" / "rm").iterdir()) == ["round2"]


@pytest.mark.slow
def test_memorised_gsm8k_sft_gives_mostly_positive_mc_labels(tmp_path, qwen_dir, capsys):
    """SFT on 4 GSM8K references until the tiny model reproduces them; Monte Carlo labels of its own samples then
    agree with the answer check end to end (the labels are mostly positive)."""
    source = write_gsm8k_file(tmp_path / "four.jsonl", n=4)
    values = _gsm8k_config(tmp_path, qwen_dir, source, data={"eval_source": str(source), "n_eval": 4},
                           policy={"max_new_tokens": 64},
                           sft={"steps": 600, "batch_size": 4, "lr": 3e-3, "warmup_steps": 20, "eval_problems": 4})
    config = _write_config(tmp_path / "sft.yaml", values)
    assert main(["policy", "sft", "--config", str(config), "--out", str(tmp_path / "sft")]) == 0
    sft = json.loads((tmp_path / "sft" / "sft_metrics.json").read_text())
    assert sft["eval_accuracy"] >= 0.75, sft  # greedy answers of the memorised problems are right
    out = tmp_path / "labels.jsonl"
    assert main(["prm", "label", "--config", str(config), "--policy", str(tmp_path / "sft"), "--problems", str(source),
                 "--out", str(out), "--n", "4", "--samples", "2"]) == 0
    summary = capsys.readouterr().out
    rows = [row for _, row in read_jsonl(out)]
    labels = [label for row in rows for label in row["labels"]]
    positive = sum(label >= 0.5 for label in labels) / len(labels)
    print(f"memorised SFT: greedy accuracy {sft['eval_accuracy']}, MC positive-label share {positive:.3f} "
          f"over {len(labels)} steps; {summary.strip().splitlines()[-1][:300]}")
    assert positive >= 0.8


def test_gsm8k_prompts_use_the_chat_template_and_the_answer_check(tmp_path, qwen_dir):
    from prmloop.data.prompts import Prompter
    from prmloop.data.tasks import get_task
    from prmloop.policy.load import load_policy
    from prmloop.policy.rollout import eos_token_ids

    model, tokenizer = load_policy(str(qwen_dir), "float32")
    assert eos_token_ids(model, tokenizer) == sorted(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    prompter = Prompter(tokenizer, "{question}\nPut the final answer in \\boxed{}.", True, "Be brief.")
    text = prompter("What is 2 + 3?")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert "\\boxed{}" in text  # a literal brace in the template stays as written
    task = get_task(load_config(None, ["data.task=gsm8k"]).data)
    row = gsm8k_rows(1)[0]
    assert task.is_correct("so " + row["answer"].split("#### ")[-1] + " in all.\n" + row["answer"].splitlines()[-1],
                           row["answer"].split("#### ")[-1].replace(",", ""))


@pytest.mark.parametrize("name", ["gsm8k_qwen.yaml", "math_qwen.yaml"])
def test_shipped_hub_configs_validate_and_fail_offline_in_one_line(name, tmp_path, capsys, monkeypatch):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.policy.chat_template and cfg.data.task in ("gsm8k", "math")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("prmloop.utils.hub.hub_reachable", lambda: False)
    code = main(["grpo", "--config", str(ROOT / "configs" / name), "--policy", cfg.policy.model, "--out",
                 str(tmp_path / "out"), "--set", "grpo.reward_source=rule", "--set", "grpo.supervision=outcome"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "the hub cannot be reached (offline)" in err[0]


def test_label_exact_on_gsm8k_is_one_clear_error(tmp_path, qwen_dir, capsys):
    source = write_gsm8k_file(tmp_path / "g.jsonl", n=4)
    code = main(["prm", "label", "--policy", str(qwen_dir), "--problems", str(source), "--out", str(tmp_path / "x"),
                 "--method", "exact", "--set", "data.task=gsm8k"])
    assert code == 2
    assert "task 'gsm8k' has no step verifier" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_chat_template_missing_is_one_clear_error(tmp_path, capsys):
    gpt2 = build_hub_model("gpt2", tmp_path / "gpt2")
    source = write_gsm8k_file(tmp_path / "g.jsonl", n=4)
    code = main(["prm", "label", "--policy", str(gpt2), "--problems", str(source), "--out", str(tmp_path / "x"),
                 "--set", "data.task=gsm8k", "--set", "policy.chat_template=true"])
    assert code == 2
    assert "policy.chat_template: the tokenizer of" in capsys.readouterr().err


def test_llama_prompts_carry_one_bos_and_sample_without_a_pad_token(tmp_path):
    from prmloop.data.prompts import Prompter
    from prmloop.data.schema import Problem
    from prmloop.data.tasks import get_task
    from prmloop.policy.accuracy import complete_problems
    from prmloop.policy.load import load_policy
    from prmloop.policy.sft import encode_sft_examples
    from prmloop.prm.encoding import encode_solution

    model, tokenizer = load_policy(str(build_hub_model("llama", tmp_path / "llama")), "float32")
    bos = tokenizer.bos_token_id
    assert tokenizer.pad_token == tokenizer.eos_token  # the checkpoint has no pad token: EOS pads (masked)
    for prompter in (Prompter(tokenizer), Prompter(tokenizer, chat_template=True)):
        text = prompter("Tom has 3 apples. How many?")
        ids = prompter.encode([text])[0]
        assert ids[0] == bos and ids.count(bos) == 1, (text, ids[:3])
        task = get_task(load_config(None, ["data.task=gsm8k"]).data)
        problem = Problem("p", "Tom has 3 apples. How many?", "3", ("He has 3 apples.", "The answer is 3."))
        [(sft_ids, prompt_len)] = encode_sft_examples([problem], tokenizer, prompter, task, 256)
        assert sft_ids[:prompt_len] == ids and sft_ids.count(bos) == 1 and sft_ids[-1] == tokenizer.eos_token_id
        encoded = encode_solution(tokenizer, text, list(problem.reference_steps), 256)
        assert encoded.input_ids.count(bos) == 1
    problems = [Problem("a", "Hi?", "1"), Problem("b", "A much longer question about apples and pears?", "2")]
    grouped = complete_problems(model, tokenizer, Prompter(tokenizer), problems, max_new_tokens=5, k=2,
                                temperature=1.0, seed=0)
    assert [len(texts) for texts in grouped] == [2, 2]
    alone = complete_problems(model, tokenizer, Prompter(tokenizer), problems[:1], max_new_tokens=5, k=2,
                              temperature=1.0, seed=0)
    assert alone[0] == grouped[0]  # left padding with EOS as pad does not change a row's samples


def test_lora_grpo_on_gsm8k_with_a_chat_model_exports_a_plain_model(tmp_path, qwen_dir, capsys):
    from transformers import AutoModelForCausalLM

    source = write_gsm8k_file(tmp_path / "gsm8k.jsonl", n=40)
    values = _gsm8k_config(tmp_path, qwen_dir, source,
                           policy={"lora_r": 4, "lora_target_modules": "q_proj,v_proj"},
                           grpo={"steps": 2, "supervision": "outcome", "reward_source": "rule", "beta": 0.04})
    config = _write_config(tmp_path / "gsm8k.yaml", values)
    code = main(["grpo", "--config", str(config), "--policy", str(qwen_dir), "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    checkpoint = {p.name for p in (tmp_path / "run" / "checkpoint" / "policy").iterdir()}
    assert "adapter_model.safetensors" in checkpoint and "model.safetensors" not in checkpoint
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "policy")
    assert type(plain).__name__ == "Qwen2ForCausalLM" and not any("lora" in n for n, _ in plain.named_parameters())


def test_a_curriculum_runs_on_gsm8k_by_reference_solution_length(tmp_path, qwen_dir):
    """loop.curriculum on a dataset task: bands come from the lengths of GSM8K's reference rationales; each round's
    evaluation logs the band's metrics and the tokens spent."""
    rows = gsm8k_rows(40)
    for index, row in enumerate(rows[::2]):  # every other rationale one line longer: two lengths to band
        row["answer"] = f"First we read the question {index}.\n" + row["answer"]
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    one_length = write_gsm8k_file(tmp_path / "one_length.jsonl", n=40)
    config = _write_config(tmp_path / "gsm8k.yaml", _gsm8k_config(tmp_path, qwen_dir, one_length))
    refused = subprocess.run([sys.executable, "-m", "prmloop", "compare", "--config", str(config), "--out",
                              str(tmp_path / "refused"), "--set", "loop.curriculum=steps"],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, check=False, timeout=600)
    assert refused.returncode == 2 and "loop.curriculum: 'steps' orders problems" in refused.stderr
    assert "Traceback" not in refused.stderr
    config = _write_config(tmp_path / "gsm8k.yaml", _gsm8k_config(tmp_path, qwen_dir, source))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prmloop", "compare", "--config", str(config), "--out", str(out),
                           "--set", "loop.curriculum=steps", "--set", "compare.arms=[process-prm-iterative]"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [row for _, row in read_jsonl(out / "arms" / "process-prm-iterative" / "seed0" / "metrics.jsonl")]
    evals = [row for row in rows if row["kind"] == "eval" and "accuracy" in row]
    assert [row["round"] for row in evals] == [0, 1, 2]
    assert all(row["band_num_problems"] >= 1 and row["tokens_total"] >= row["tokens_reward_model"] > 0 for row in evals)
    assert evals[-1]["tokens_reward_model"] > evals[0]["tokens_reward_model"]  # round 2 retrained the PRM
