"""Tests for prm/train.py (and loop/jobs_prm.train_prm_job): the BCE loss, label targets, replay, a short real run."""

import json
import math
import random

import pytest
import torch

import prmloop.prm.train
from prmloop.data.schema import StepwiseExample
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.loop.config import ExperimentConfig
from prmloop.loop.jobs_prm import train_prm_job
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.config import PRMConfig
from prmloop.prm.model import StepRewardModel
from prmloop.prm.threshold import best_first_error_threshold, fold_threshold, threshold_candidates
from prmloop.prm.train import (
    build_items,
    collate_items,
    hard_targets,
    lr_factor,
    sample_replay,
    soft_targets,
    split_validation,
    step_bce_loss,
    steps_through_first_error,
    train_prm,
    warmup_steps_for,
)
from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import write_jsonl

PROMPT = "Q\n"


def toy_examples(n: int, seed: int, soft: bool = False) -> list[StepwiseExample]:
    """Steps "N ok" are right and "N no" wrong; soft labels are 0.8 / 0.15 (must reach the loss as such)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        words = [rng.choice(["ok", "no"]) for _ in range(rng.randint(1, 3))]
        steps = [f"{rng.randint(1, 9)} {word}" for word in words]
        good, bad = (0.8, 0.15) if soft else (True, False)
        examples.append(StepwiseExample(PROMPT, steps, [good if w == "ok" else bad for w in words]))
    return examples


def toy_model(mode="process", max_length=64):
    """A random tiny PRM with an unbiased fresh head."""
    tokenizer = build_task_tokenizer()
    model = StepRewardModel.from_model(tiny_random_model("llama", tokenizer, seed=0), tokenizer, mode, max_length)
    with torch.no_grad():
        model.head.bias.zero_()
    return model


def test_bce_loss_literal():
    logits = torch.tensor([0.0, math.log(3.0)])  # (S,)
    targets = torch.tensor([0.3, 0.25])
    # logit 0: p = 0.5, BCE = ln 2 = 0.693147 for any target.
    # logit ln 3: p = 0.75; BCE = -(0.25 ln 0.75 + 0.75 ln 0.25) = 0.071921 + 1.039721 = 1.111642. Mean = 0.902395.
    assert step_bce_loss(logits, targets).item() == pytest.approx(0.902395, abs=1e-5)


def test_soft_label_reaches_the_gradient_unchanged():
    logits = torch.zeros(2, requires_grad=True)  # (S,)
    loss = step_bce_loss(logits, torch.tensor([0.37, 0.9]))
    loss.backward()
    # d BCE / d z = sigmoid(z) - y = 0.5 - y, divided by S = 2 steps: (0.13 / 2, -0.4 / 2).
    assert logits.grad.tolist() == pytest.approx([0.065, -0.2], abs=1e-7)


def test_supervision_stops_at_the_first_error():
    assert steps_through_first_error([0, 1, 2, 3], [1.0, 0.0, 1.0, 0.0]) == [0, 1]
    assert steps_through_first_error([0, 1, 2], [1.0, 0.6, 0.9]) == [0, 1, 2]  # 0.6 >= 0.5 counts as correct
    assert steps_through_first_error([2], [1.0, 1.0, 0.3]) == [2]  # outcome mode: the final step only
    example = StepwiseExample("Q\n", ["ab", "cd", "ef"], [1.0, 0.0, 0.0])  # separators (read) at tokens 4, 7, 10
    [item], _, _ = build_items([example], build_task_tokenizer(), "process", "hard", 64, "through_first_error")
    assert (item.positions, item.starts, item.targets) == ([4, 7], [2, 5], [1.0, 0.0])
    with pytest.raises(UserError, match=r"prm.supervise: unknown choice 'some'"):
        build_items([example], build_task_tokenizer(), "process", "hard", 64, "some")


def test_label_types_literal():
    assert soft_targets([True, 0.37, False, 1.0]) == [1.0, 0.37, 0.0, 1.0]
    assert hard_targets([True, 0.37, 0.5, False]) == [1.0, 0.0, 1.0, 0.0]


def test_lr_factor_literal():
    # warm-up 4 of 14 steps: (step + 1) / 4, then linear from 1.0 at step 4 to 0.1 at step 14.
    assert [lr_factor(s, 4, 14) for s in (0, 3, 4, 9, 14, 20)] == pytest.approx([0.25, 1.0, 1.0, 0.55, 0.1, 0.1])
    # warm-up sized to the data: ceil(0.1 * 16) = 2 (a 16-step retraining round), ceil(0.1 * 58) = 6
    assert [warmup_steps_for(n, 0.1) for n in (16, 58, 5)] == [2, 6, 1] and warmup_steps_for(16, 0.0) == 0


def test_items_outcome_mode_and_truncation_counts():
    tokenizer = build_task_tokenizer()
    example = StepwiseExample("Q\n", ["ab", "cd", "ef"], [1.0, 0.37, 0.0])  # separators (read) at tokens 4, 7, 10
    [item], dropped, skipped = build_items([example], tokenizer, "process", "soft", max_length=64)
    assert (item.positions, item.targets, dropped, skipped) == ([4, 7, 10], [1.0, 0.37, 0.0], 0, 0)
    [item], dropped, _ = build_items([example], tokenizer, "outcome", "soft", max_length=64)
    assert (item.positions, item.targets, dropped) == ([10], [0.0], 0)
    [item], dropped, _ = build_items([example], tokenizer, "process", "hard", max_length=8)  # tokens 0..7
    assert (item.positions, item.targets, dropped) == ([4, 7], [1.0, 0.0], 1)
    items, dropped, skipped = build_items([example], tokenizer, "outcome", "soft", max_length=8)
    assert (items, dropped, skipped) == ([], 1, 1)
    batch = collate_items([item, item], pad_id=0)
    assert batch["rows"].tolist() == [0, 0, 1, 1] and batch["positions"].tolist() == [4, 7, 4, 7]


def test_split_and_replay_are_seeded():
    examples = toy_examples(20, seed=1)
    train, val = split_validation(examples, 0.25, seed=3)
    assert len(train) == 15 and len(val) == 5 and not {id(e) for e in train} & {id(e) for e in val}
    assert split_validation(examples, 0.25, seed=3)[1] == val
    assert sample_replay(examples, 4, seed=2) == sample_replay(examples, 4, seed=2)
    assert len(sample_replay(examples, 50, seed=2)) == 20


@pytest.mark.parametrize("label_type", ["soft", "hard"])
def test_train_prm_feeds_labels_to_the_loss_and_mixes_replay(monkeypatch, label_type):
    seen: list[float] = []

    def recording_loss(logits, targets):
        seen.extend(targets.tolist())
        return step_bce_loss(logits, targets)

    monkeypatch.setattr(prmloop.prm.train, "step_bce_loss", recording_loss)
    new, history = toy_examples(16, seed=0, soft=True), toy_examples(40, seed=1)
    cfg = PRMConfig(epochs=1, batch_size=8, replay_fraction=0.25, val_fraction=0.0, label_type=label_type, supervise="all")
    summary = train_prm(toy_model(), new, cfg, replay=history, log=lambda line: None)
    assert (summary["n_train"], summary["n_replay"], summary["n_val"]) == (16, 4, 0)  # round(0.25 * 16) = 4
    # new examples carry soft 0.8 / 0.15, replayed ones True / False; hard maps 0.8 -> 1.0 and 0.15 -> 0.0.
    assert set(seen) == ({0.8, 0.15, 1.0, 0.0} if label_type == "soft" else {1.0, 0.0})
    steps = sum(len(e.completions) for e in new) + sum(len(e.completions) for e in sample_replay(history, 4, 0))
    assert len(seen) == steps  # every step of new + replayed examples, once (one epoch)


def test_train_prm_learns_a_toy_step_rule():
    lines: list[str] = []
    cfg = PRMConfig(epochs=3, batch_size=16, lr=3e-3, head_lr=3e-3, val_fraction=0.0, supervise="all")  # a per-step rule
    model = toy_model()
    summary = train_prm(model, toy_examples(160, seed=0), cfg, val_examples=toy_examples(40, seed=9), log=lines.append)
    first, last = summary["history"][0], summary["history"][-1]
    assert last["train_loss"] < first["train_loss"]
    assert summary["val_step_acc"] >= 0.95 and summary["val_first_error_f1"] >= 0.9
    assert any("validation" in line for line in lines) and summary["n_dropped_steps"] == 0


def test_bad_training_data_is_one_clear_error():
    model = toy_model()
    cfg = PRMConfig(epochs=1, val_fraction=0.0)
    with pytest.raises(UserError, match=r"^training example 0: 1 labels for 2 steps$"):
        train_prm(model, [StepwiseExample(PROMPT, ["1 ok", "2 no"], [1.0])], cfg)
    with pytest.raises(UserError, match=r"^training example 0: label 0 is 1.5"):
        train_prm(model, [StepwiseExample(PROMPT, ["1 ok"], [1.5])], cfg)
    with pytest.raises(UserError, match=r"^training example 0: 'completions' must be a non-empty list"):
        train_prm(model, [StepwiseExample(PROMPT, [], [])], cfg)
    with pytest.raises(UserError, match=r"^prm.label_type = 'fuzzy': must be one of soft, hard$"):
        train_prm(model, toy_examples(2, 0), PRMConfig(label_type="fuzzy"))
    with pytest.raises(UserError, match=r"prm.mode: training in 'outcome' mode, but the model was built for 'process'"):
        train_prm(model, toy_examples(2, 0), PRMConfig(mode="outcome"))
    with pytest.raises(UserError, match=r"none of 1 examples has a step within max_length"):
        train_prm(toy_model(max_length=2), toy_examples(1, 0), cfg)


def test_train_job_starts_from_a_policy_then_continues_from_the_prm(tmp_path):
    tokenizer = build_task_tokenizer()
    tiny_random_model("llama", tokenizer, seed=0).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    write_jsonl(tmp_path / "data.jsonl", [e.to_row() for e in toy_examples(24, seed=0, soft=True)])
    cfg = ExperimentConfig()
    cfg.prm = PRMConfig(epochs=1, batch_size=8, val_fraction=0.25, max_length=64)
    first = train_prm_job(cfg, str(tmp_path / "data.jsonl"), str(tmp_path / "prm1"), str(tmp_path / "policy"), None)
    assert first["init"].startswith("fresh PRM from causal LM") and "newly initialised head" in first["init"]
    assert first["n_val"] == 6 and "val_step_acc" in first
    assert json.loads((tmp_path / "prm1" / "prm_metrics.json").read_text())["n_train"] == 18
    second = train_prm_job(cfg, str(tmp_path / "data.jsonl"), str(tmp_path / "prm2"), str(tmp_path / "prm1"),
                           str(tmp_path / "data.jsonl"))
    assert second["init"].startswith("continued prmloop") and second["n_replay"] == 2  # round(0.1 * 18)
    assert (tmp_path / "prm2" / "config.yaml").is_file()
    with pytest.raises(UserError, match="no such file"):
        train_prm_job(cfg, str(tmp_path / "missing.jsonl"), str(tmp_path / "prm3"), str(tmp_path / "policy"), None)


def test_threshold_candidates_literal():
    # distinct scores 0.2, 0.4, 0.9 -> midpoints 0.3, 0.65, plus 0.5
    assert threshold_candidates([[0.2, 0.9], [0.4]]) == pytest.approx([0.3, 0.5, 0.65])


def test_best_first_error_threshold_literal():
    # Solution A: scores [0.9, 0.4], label first error 1; B: [0.45], no error. Candidates 0.425, 0.5, 0.675.
    # t=0.5: A predicted 1 (hit), B predicted 0 (miss) -> acc_correct 0 -> F1 0.
    # t=0.425: A predicted 1 (0.4 < 0.425), B predicted -1 -> both hit -> F1 1.  t=0.675: A hit, B miss -> 0.
    threshold, f1 = best_first_error_threshold([[0.9, 0.4], [0.45]], [[1.0, 0.0], [1.0]])
    assert threshold == pytest.approx(0.425) and f1 == 1.0
    # Already perfect at 0.5 (A: [0.9, 0.1], B: [0.8]): ties keep the threshold nearest 0.5 in logit space,
    # candidates 0.45 (|logit| 0.20) and 0.5 (0) and 0.85 -> 0.5 itself.
    assert best_first_error_threshold([[0.9, 0.1], [0.8]], [[1.0, 0.0], [1.0]]) == (0.5, 1.0)


def test_fold_threshold_moves_the_decision_point_to_one_half():
    model = toy_model()
    examples = toy_examples(6, seed=3)
    prompts, solutions = [e.prompt for e in examples], [e.completions for e in examples]
    before = [s for scores in model.score_steps(prompts, solutions) for s in scores]
    shift = fold_threshold(model, 0.8)
    after = [s for scores in model.score_steps(prompts, solutions) for s in scores]
    assert shift == pytest.approx(-math.log(0.8 / 0.2))
    # sigma(z - logit 0.8) for every step: score >= 0.8 before iff score >= 0.5 after
    assert after == pytest.approx([1 / (1 + math.exp(-(math.log(b / (1 - b)) + shift))) for b in before], abs=1e-6)


def _weights(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _changed(before, module):
    return {name for name, value in module.state_dict().items() if not torch.equal(before[name], value)}


def test_defaults_train_the_backbone_and_a_short_retraining_moves_scores():
    model = toy_model()
    backbone = _weights(model.backbone)
    examples = toy_examples(16, seed=0)  # one epoch of 2 optimizer steps at the defaults' batch... of 8
    before = flat_scores(model, examples)
    train_prm(model, examples, PRMConfig(epochs=2, batch_size=8, val_fraction=0.0), log=lambda line: None)
    assert _changed(backbone, model.backbone)  # full fine-tuning by default (prm.lr 1e-4)
    after = flat_scores(model, examples)
    assert max(abs(a - b) for a, b in zip(after, before)) > 0.01  # 4 optimizer steps measurably move the scores


def test_lr_zero_freezes_the_backbone_and_lora_trains_only_adapters(tmp_path):
    pytest.importorskip("peft")
    frozen = toy_model()
    backbone = _weights(frozen.backbone)
    train_prm(frozen, toy_examples(16, seed=0), PRMConfig(epochs=1, batch_size=8, lr=0.0, val_fraction=0.0),
              log=lambda line: None)
    assert not _changed(backbone, frozen.backbone)
    lora = toy_model()
    base = _weights(lora.backbone)
    train_prm(lora, toy_examples(16, seed=0), PRMConfig(epochs=2, batch_size=8, lr=1e-2, lora_r=4, val_fraction=0.0),
              log=lambda line: None)
    trained = {name for name, p in lora.backbone.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)  # only the adapters train in the backbone
    scores = flat_scores(lora, toy_examples(6, seed=3))
    lora.save_pretrained(tmp_path / "prm")  # merges the adapters
    merged = StepRewardModel.from_pretrained(tmp_path / "prm")
    assert flat_scores(merged, toy_examples(6, seed=3)) == pytest.approx(scores, abs=1e-5)
    assert _changed(base, merged.backbone)  # the merged weights differ from the start


def flat_scores(model, examples):
    scores = model.score_steps([e.prompt for e in examples], [e.completions for e in examples])
    return [s for row in scores for s in row]


def test_tune_threshold_folds_the_validation_best_threshold_into_the_bias():
    lines: list[str] = []
    cfg = PRMConfig(epochs=1, batch_size=8, head_lr=1e-2, tune_threshold=True)
    model = toy_model()
    summary = train_prm(model, toy_examples(40, seed=0), cfg, log=lines.append)
    assert 0.0 < summary["tuned_threshold"] < 1.0 and any("folded into the bias" in line for line in lines)
    assert summary["bias_shift"] == pytest.approx(-math.log(summary["tuned_threshold"] / (1 - summary["tuned_threshold"])))
    # the reported validation metrics are re-measured at 0.5 after folding: the tuned F1 itself, >= the untuned one
    assert summary["val_first_error_f1"] == pytest.approx(summary["tuned_val_first_error_f1"])
    assert summary["val_first_error_f1"] >= summary["history"][-1]["val_first_error_f1"]
    untuned = train_prm(toy_model(), toy_examples(40, seed=0), PRMConfig(epochs=1, batch_size=8, head_lr=1e-2),
                        log=lambda line: None)
    assert "tuned_threshold" not in untuned


def _shifted_examples(n: int, seed: int, good: str, bad: str) -> list[StepwiseExample]:
    """Solutions of 1-3 steps "N good"/"N bad", labelled with first-error semantics (every step after a bad one bad)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        words = [rng.choice([good, bad]) for _ in range(rng.randint(1, 3))]
        labels = [all(w == good for w in words[: i + 1]) for i in range(len(words))]
        examples.append(StepwiseExample(PROMPT, [f"{rng.randint(1, 9)} {w}" for w in words], labels))
    return examples


def test_retraining_on_a_shifted_policys_samples_scores_them_better():
    """Iterative retraining must move the model: a PRM trained on one distribution ("ok"/"no" steps), retrained with
    the default schedule on samples of a shifted one ("yes"/"bad"), judges the shifted samples far better."""
    from prmloop.prm.scoring_eval import evaluate_steps

    torch.manual_seed(0)
    model = toy_model()
    cfg = PRMConfig(epochs=2, batch_size=32, val_fraction=0.0)  # the defaults' schedule: 16 optimizer steps a round
    train_prm(model, _shifted_examples(256, 0, "ok", "no"), cfg, log=lambda line: None)
    shifted = _shifted_examples(64, 9, "yes", "bad")
    before = evaluate_steps(model, shifted)["first_error_f1"]
    train_prm(model, _shifted_examples(256, 1, "yes", "bad"), cfg, log=lambda line: None)
    after = evaluate_steps(model, shifted)["first_error_f1"]
    assert after > before + 0.3, (before, after)


def test_a_diverged_prm_is_refused_not_saved(monkeypatch):
    def nan_loss(logits, targets):
        return step_bce_loss(logits, targets) * math.nan

    monkeypatch.setattr(prmloop.prm.train, "step_bce_loss", nan_loss)
    with pytest.raises(UserError, match=r"prm training diverged \(train loss nan\); the reward model is not saved"):
        train_prm(toy_model(), toy_examples(16, seed=0), PRMConfig(epochs=1, batch_size=8, val_fraction=0.0),
                  log=lambda line: None)
