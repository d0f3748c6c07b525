"""The warm start: a policy in the cache comes first, then the one shipped for exactly these settings, then training;
the shipped policy is the study's (configs/compare.yaml, shared by the demo) and was trained by this code."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.loop import stages
from prmloop.loop.cli import DEMO_CONFIG
from prmloop.loop.config import load_config
from prmloop.loop.stages import SHIPPED_WARM_STARTS, shipped_warm_start, warm_start, warm_start_path

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "regenerate it (loop/warm_starts/README.md) or the configs moved away from the shipped warm start"


def test_the_shipped_warm_start_is_the_study_and_demo_one():
    shipped = sorted(path.name for path in SHIPPED_WARM_STARTS.iterdir() if path.is_dir())
    study, demo = load_config(ROOT / "configs/compare.yaml"), load_config(None, preset=DEMO_CONFIG)
    assert shipped == [warm_start_path(study).name] == [warm_start_path(demo).name], REGENERATE
    assert shipped_warm_start(study) == shipped_warm_start(demo) == SHIPPED_WARM_STARTS / shipped[0]
    saved = yaml.safe_load((SHIPPED_WARM_STARTS / shipped[0] / "config.yaml").read_text())
    for section in ("data", "policy", "sft"):  # the settings it was trained with, key by key
        assert saved[section] == dataclasses.asdict(getattr(study, section)), (section, REGENERATE)
    tokenizer = json.loads((SHIPPED_WARM_STARTS / shipped[0] / "tokenizer.json").read_text())
    assert tokenizer["model"]["vocab"] == build_task_tokenizer().get_vocab(), REGENERATE


def test_cache_first_then_shipped_then_training(tmp_path, monkeypatch):
    trained = []

    def fake_sft(cfg, out):
        trained.append(out)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "sft_metrics.json").write_text(json.dumps({"eval_accuracy": 0.5}))

    monkeypatch.setattr(stages, "run_sft", fake_sft)
    logs = []
    cfg = load_config(ROOT / "configs/compare.yaml", [f"loop.cache_dir={tmp_path / 'cache'}"])
    assert warm_start(cfg, logs.append) == shipped_warm_start(cfg) and not trained
    assert "shipped" in logs[-1] and "loop.shipped_warm_start=false" in logs[-1]
    assert not (tmp_path / "cache" / warm_start_path(cfg).name).exists()  # nothing copied, nothing written

    cfg.loop.shipped_warm_start = False
    path = warm_start(cfg, logs.append)
    assert path == warm_start_path(cfg) and len(trained) == 1  # trained here, into the cache
    cfg.loop.shipped_warm_start = True
    assert warm_start(cfg, logs.append) == path and "cached" in logs[-1]  # the user's own entry wins

    other = load_config(ROOT / "configs/compare.yaml", [f"loop.cache_dir={tmp_path / 'c2'}", "sft.steps=1199"])
    assert shipped_warm_start(other) is None  # any other setting trains
    warm_start(other, logs.append)
    assert len(trained) == 2


@pytest.mark.slow
def test_the_shipped_policy_solves_held_out_problems():
    from prmloop.data.prompts import Prompter
    from prmloop.policy.load import load_policy
    from prmloop.policy.sft import evaluate_greedy

    cfg = load_config(ROOT / "configs/compare.yaml")
    model, tokenizer = load_policy(str(shipped_warm_start(cfg)), "float32")
    task = get_task(cfg.data)
    result = evaluate_greedy(model, tokenizer, Prompter.of(cfg.policy, tokenizer), task, task.problems()[1][:40],
                             cfg.policy.max_new_tokens)
    # trained on a teacher who slips: most answers wrong, but most of its steps are the taught ones (band: 0.33-0.37)
    assert 0.1 <= result.accuracy <= 0.6
    assert result.trace_accuracy <= result.accuracy
