"""Tests for policy/rewards.py: the answer check, dispatch by (supervision, reward_source), bad setups and inputs."""

import math

import pytest
import torch

from prmloop.data.config import DataConfig
from prmloop.data.schema import Problem
from prmloop.data.tasks import get_task
from prmloop.policy.rewards import Rewards, check_reward_setup, compute_rewards
from prmloop.utils.errors import UserError

PROBLEM = Problem("p0", "1 + 2 = ? (left to right)", "3", ("1 + 2 = 3", "Answer: 3"))
CHECK = get_task(DataConfig()).is_correct


class RecordingScorer:
    """Step score = 0.1 * the step's length; ORM mode returns one score per solution; records what it was sent."""

    def __init__(self, orm: bool = False):
        self.orm, self.calls = orm, []

    def score_steps(self, prompts, solutions):
        self.calls.append((list(prompts), [list(s) for s in solutions]))
        scores = [[0.1 * len(step) for step in steps] for steps in solutions]
        return [[row[-1]] for row in scores] if self.orm else scores


def test_rule_reward_is_the_task_answer_check():
    texts = ["1 + 2 = 3\nAnswer: 3", "1 + 2 = 4\nAnswer: 4", "Answer: 4\nAnswer: 3", "so it is \\boxed{3}", ""]
    rewards = compute_rewards([PROBLEM] * 5, ["q\n"] * 5, texts, [[]] * 5, check=CHECK, supervision="outcome",
                              reward_source="rule")
    assert rewards.rule.tolist() == [float(CHECK(text, "3")) for text in texts] == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_process_rewards_stop_at_the_prm_window():
    class Windowed:  # steps after the second do not fit: NaN, as StepRewardModel scores them
        def score_steps(self, prompts, solutions):
            return [[0.5 if j < 2 else math.nan for j in range(len(steps))] for steps in solutions]

    steps = [["a", "b", "c"], ["a"], []]
    rewards = compute_rewards([PROBLEM] * 3, ["q\n"] * 3, ["x"] * 3, steps, check=CHECK, supervision="process",
                              reward_source="prm", scorer=Windowed())
    assert rewards.steps == [[0.5, 0.5], [0.5], []]
    assert rewards.steps_beyond_window == 1
    assert rewards.is_finite()


def _batch():
    texts = ["1 + 2 = 3\nAnswer: 3", "1 + 2 = 4\nAnswer: 4", ""]
    steps = [["1 + 2 = 3", "Answer: 3"], ["1 + 2 = 4", "Answer: 4"], []]
    return [PROBLEM] * 3, ["q\n"] * 3, texts, steps


def test_outcome_rule():
    rewards = compute_rewards(*_batch(), check=CHECK, supervision="outcome", reward_source="rule")
    assert rewards.outcome.tolist() == [1.0, 0.0, 0.0]
    assert rewards.rule.tolist() == [1.0, 0.0, 0.0]
    assert rewards.steps is None


@pytest.mark.parametrize(("source", "orm"), [("orm", True), ("prm", False)])
def test_outcome_from_scorer_uses_last_step_and_skips_empty(source, orm):
    scorer = RecordingScorer(orm=orm)
    rewards = compute_rewards(*_batch(), check=CHECK, supervision="outcome", reward_source=source, scorer=scorer)
    # last steps "Answer: 3" and "Answer: 4" have 9 chars -> 0.9; the empty completion gets 0 and is never sent
    assert rewards.outcome.tolist() == pytest.approx([0.9, 0.9, 0.0])
    assert rewards.rule.tolist() == [1.0, 0.0, 0.0]
    assert len(scorer.calls) == 1 and len(scorer.calls[0][1]) == 2


def test_process_prm_gives_one_reward_per_step():
    scorer = RecordingScorer()
    rewards = compute_rewards(*_batch(), check=CHECK, supervision="process", reward_source="prm", scorer=scorer)
    # "1 + 2 = 3" has 9 chars -> 0.9, "Answer: 3" 9 chars -> 0.9
    assert rewards.steps == [pytest.approx([0.9, 0.9]), pytest.approx([0.9, 0.9]), []]
    assert rewards.outcome is None
    table = rewards.step_tensor(3)
    assert table.shape == (3, 3) and table[2].tolist() == [0.0, 0.0, 0.0]


def test_process_with_an_orm_is_caught():
    with pytest.raises(ValueError, match="process-mode PRM"):
        compute_rewards(*_batch(), check=CHECK, supervision="process", reward_source="prm", scorer=RecordingScorer(orm=True))


@pytest.mark.parametrize(("supervision", "source", "match"), [
    ("process", "rule", "grpo.reward_source"),
    ("process", "orm", "grpo.reward_source"),
    ("outcome", "verifier", "grpo.reward_source"),
    ("dense", "prm", "grpo.supervision"),
])
def test_impossible_setups_are_one_line_user_errors(supervision, source, match):
    with pytest.raises(UserError, match=match) as info:
        check_reward_setup(supervision, source)
    assert "\n" not in str(info.value)


def test_scorer_required():
    with pytest.raises(UserError, match="needs a reward model"):
        compute_rewards(*_batch(), check=CHECK, supervision="outcome", reward_source="orm", scorer=None)


def test_non_finite_rewards_are_reported():
    rule = torch.tensor([1.0, 0.0])
    assert Rewards(rule, torch.tensor([0.5, 0.5]), None).is_finite()
    assert not Rewards(rule, torch.tensor([0.5, math.nan]), None).is_finite()
    assert not Rewards(rule, None, [[0.5, math.inf], []]).is_finite()
    assert Rewards(rule, None, [[0.5], []]).is_finite()


class FixedOnlineScorer:
    """An online scorer (an implicit PRM's interface) that records the labels it learns from; every step gets 0.25."""

    def __init__(self):
        self.labels: list[list[float]] = []

    def score_steps(self, prompts, solutions):
        return [[0.5] * len(steps) for steps in solutions]

    def online_step(self, prompts, solutions, labels):
        self.labels.append(list(labels))
        return [[0.25] * len(steps) for steps in solutions], {"implicit/loss": 0.5}

    def save_pretrained(self, out_dir):
        return out_dir

    def load_online(self, path):
        return None


def test_implicit_source_learns_from_the_rule_labels_of_completions_with_steps():
    scorer = FixedOnlineScorer()
    texts, steps = ["1 + 2 = 3\nAnswer: 3", "", "Answer: 4"], [["1 + 2 = 3", "Answer: 3"], [], ["Answer: 4"]]
    rewards = compute_rewards([PROBLEM] * 3, ["q\n"] * 3, texts, steps, "process", "implicit", CHECK, scorer)
    assert rewards.rule.tolist() == [1.0, 0.0, 0.0]
    assert scorer.labels == [[1.0, 0.0]]  # the completion without steps is neither scored nor learnt from
    assert rewards.steps == [[0.25, 0.25], [], [0.25]] and rewards.scorer_stats == {"implicit/loss": 0.5}
    with pytest.raises(UserError, match="'implicit' needs an implicit PRM that learns online"):
        compute_rewards([PROBLEM], ["q\n"], texts[:1], steps[:1], "process", "implicit", CHECK, RecordingScorer())
