"""Tests for data/tasks.py: one answer check everywhere, dataset tasks from local files, splits, bad input."""

import json

import pytest
from hub_fixtures import write_gsm8k_file, write_math500_file, write_math_file

from prmloop.data import arith
from prmloop.data.config import DataConfig
from prmloop.data.schema import Problem
from prmloop.data.tasks import get_task
from prmloop.loop.stages import format_prefix_for, label_rows, outcome_examples
from prmloop.policy.accuracy import correctness
from prmloop.policy.rewards import compute_rewards
from prmloop.prm.label import label_exhaustive
from prmloop.utils.errors import UserError

ANSWER_TABLE = [
    # (completion, reference, right?)
    ("She pays 5 * 9 = 45 dollars.\nThe answer is 45.", "45", True),
    ("She pays 5 * 9 = 45 dollars.\n#### 45", "45", True),
    ("So the total is $\\boxed{45}$.", "45", True),
    ("5 * 9 = 45\nAnswer: 45", "45", True),
    ("Answer:45", "45", True),
    ("the answer is 45.0", "45", True),
    ("#### 1,045", "1045", True),
    ("The answer is 1,045.", "1045", True),
    ("So $x = \\boxed{\\frac{1}{2}}$.", "0.5", True),
    ("The answer is 44.", "45", False),
    ("#### 145", "45", False),
    ("\\boxed{4.5}", "45", False),
    ("Answer: 1,045", "145", False),
    ("5 * 9 = 45", "45", False),  # no final answer stated
    ("", "45", False),
    ("The answer is 45.\nThe answer is 46.", "45", False),  # the last statement counts
]


class EchoSampler:
    """MC sampler whose every completion states the answer the test wants (so a prefix's label = that check)."""

    def __init__(self, text):
        self.text = text

    def complete(self, prompts, n):
        return [[self.text] * n for _ in prompts]


@pytest.mark.parametrize("task_name", ["arith", "gsm8k", "math", "problems"])
def test_one_answer_check_is_used_everywhere(task_name, tmp_path):
    task = get_task(DataConfig(task=task_name, source=str(tmp_path / "unused.jsonl")))
    expected = [ok for _, _, ok in ANSWER_TABLE]
    problems = [Problem(f"p{i}", "q", ref) for i, (_, ref, _) in enumerate(ANSWER_TABLE)]
    texts = [text for text, _, _ in ANSWER_TABLE]
    assert [task.is_correct(text, ref) for text, ref, _ in ANSWER_TABLE] == expected
    # GRPO's rule reward
    rewards = compute_rewards(problems, ["q\n"] * len(texts), texts, [[]] * len(texts), "outcome", "rule",
                              task.is_correct)
    assert rewards.outcome.tolist() == [float(ok) for ok in expected]
    # every evaluation
    assert [row[0] for row in correctness(task, problems, [[text] for text in texts])] == expected
    # Monte Carlo labels: a completion of a prefix counts as reaching the answer by the same check
    prefix = format_prefix_for(lambda question: question + "\n", task)
    for text, ref, ok in ANSWER_TABLE:
        labels, _ = label_exhaustive([("q", ref)], [["first step", "second step"]], EchoSampler(text), 2, prefix,
                                     task.is_correct)
        assert labels[0][0] == float(ok), text
    # ORM labels: the completion's own answer check, stored by label_rows and used by outcome_examples
    rows = [{"problem_id": p.id, "question": "q", "answer": p.answer, "prompt": "q\n", "completion": text}
            for p, text in zip(problems, texts) if text]
    examples, _ = label_rows(rows, "mc", EchoSampler("nothing"), 1, "hard", task, lambda q: q + "\n", 0)
    assert [e.meta["final_answer_correct"] for e in examples] == [ok for (text, _, ok) in ANSWER_TABLE if text]
    assert [bool(e.labels[-1]) for e in outcome_examples(examples)] == [ok for (text, _, ok) in ANSWER_TABLE if text]


def test_gsm8k_task_from_a_local_file(tmp_path):
    source = write_gsm8k_file(tmp_path / "gsm8k.jsonl", n=60)
    task = get_task(DataConfig(task="gsm8k", source=str(source), n_train=1000, n_eval=1000))
    train, held_out = task.problems()
    assert len(train) + len(held_out) == 60 and held_out  # one file: held out by question hash, never overlapping
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert all(arith.split_of(p.question) == "eval" for p in held_out)
    first = json.loads(source.read_text().splitlines()[0])
    problem = next(p for p in train + held_out if p.question == first["question"])
    # rationale lines without <<...>> notes, then the final answer as a step the answer check reads
    assert problem.reference_steps[-1] == f"The answer is {problem.answer}."
    assert not any("<<" in step for step in problem.reference_steps)
    assert task.is_correct(task.join(problem.reference_steps), problem.answer)
    assert task.split(task.join(problem.reference_steps)) == list(problem.reference_steps)
    assert not task.has_verifier
    with pytest.raises(UserError, match="'gsm8k' has no exact step verifier"):
        task.verify_steps(problem, list(problem.reference_steps))
    small = get_task(DataConfig(task="gsm8k", source=str(source), n_train=5, n_eval=2)).problems()
    assert [len(part) for part in small] == [5, 2]


def test_eval_source_gives_held_out_problems_from_a_second_file(tmp_path):
    train_file = write_gsm8k_file(tmp_path / "train.jsonl", n=12)
    test_file = write_math500_file(tmp_path / "test.jsonl", n=4)  # any file in the task's format
    gsm_test = write_gsm8k_file(tmp_path / "test_gsm.jsonl", n=3)
    task = get_task(DataConfig(task="gsm8k", source=str(train_file), eval_source=str(gsm_test)))
    train, held_out = task.problems()
    assert (len(train), len(held_out)) == (12, 3)
    with pytest.raises(UserError, match=r"test.jsonl:1: .*'question'"):
        get_task(DataConfig(task="gsm8k", source=str(train_file), eval_source=str(test_file))).problems()


def test_math_task_reads_boxed_answers_and_paragraph_steps(tmp_path):
    source = write_math_file(tmp_path / "math.jsonl", n=6)
    task = get_task(DataConfig(task="math", source=str(source), eval_split=""))
    assert task.step_split == "blank_line" and task.separator == "\n\n"
    problems = task.load_split(task.cfg, "train")
    assert len(problems) == 6
    for problem in problems:
        assert len(problem.reference_steps) >= 2
        assert task.is_correct(task.join(problem.reference_steps), problem.answer)
    assert get_task(DataConfig(task="math", step_split="newline")).separator == "\n"
    math500 = get_task(DataConfig(task="math", source=str(write_math500_file(tmp_path / "m5.jsonl", n=4))))
    assert all(p.id.startswith("test/") for p in math500.load_split(math500.cfg, "test"))


def test_problems_task_reads_named_columns(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"prompt_text": f"What is {i} + {i}?", "gold": 2 * i} for i in range(30)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = DataConfig(task="problems", source=str(path), question_column="prompt_text", answer_column="gold")
    train, held_out = get_task(cfg).problems()
    assert len(train) + len(held_out) == 30
    assert all(p.answer == str(2 * int(p.question.split()[2])) for p in train + held_out)  # numbers become text
    assert all(not p.reference_steps for p in train)
    with pytest.raises(UserError, match=r"mine.jsonl:1: no text in column 'question' \(data.question_column\); "
                                        r"the row has: gold, prompt_text"):
        get_task(DataConfig(task="problems", source=str(path))).problems()
    with pytest.raises(UserError, match="data.source: the 'problems' task needs"):
        get_task(DataConfig(task="problems")).problems()


def test_bad_task_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"data.task: unknown task 'gsm9k'; valid: arith, gsm8k, math, problems"):
        get_task(DataConfig(task="gsm9k"))
    with pytest.raises(UserError, match=r"data.step_split: unknown 'lines'"):
        get_task(DataConfig(step_split="lines"))
    with pytest.raises(UserError, match=r"no such file"):
        get_task(DataConfig(task="gsm8k", source=str(tmp_path / "missing.jsonl"))).problems()
    with pytest.raises(UserError, match=r"data.n_train/n_eval: must be >= 1"):
        get_task(DataConfig(n_eval=0)).problems()
    one = write_gsm8k_file(tmp_path / "one.jsonl", n=1)
    with pytest.raises(UserError, match=r"gave \d training and \d held-out problems; both are needed"):
        get_task(DataConfig(task="gsm8k", source=str(one))).problems()


def test_arith_task_matches_the_generator_and_verifier():
    cfg = DataConfig(n_train=20, n_eval=5)
    task = get_task(cfg)
    train, held_out = task.problems()
    assert train == arith.generate(cfg, 20, "train") and held_out == arith.generate(cfg, 5, "eval")
    problem = train[0]
    assert task.verify_steps(problem, list(problem.reference_steps)) == [True] * len(problem.reference_steps)
    wrong = ["1 + 1 = 3", *problem.reference_steps[1:]]
    assert task.verify_steps(problem, wrong)[0] is False


def test_an_unreadable_problems_row_names_its_line_and_why(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"question": "1+1", "answer": "2"}\n{"question": "Q \xff", "answer": "5"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: not UTF-8 text"):
        get_task(DataConfig(task="problems", source=str(path))).problems()


def test_sft_problems_use_the_slipping_teacher_only_when_asked(tmp_path):
    exact = get_task(DataConfig(n_train=50, n_eval=5, min_steps=4, max_steps=6))
    train, _ = exact.problems()
    assert exact.sft_problems(train) == train
    slipping = get_task(DataConfig(n_train=50, n_eval=5, min_steps=4, max_steps=6, slip_rate=1.0))
    taught = slipping.sft_problems(train)
    assert [p.question for p in taught] == [p.question for p in train]
    # at rate 1 every problem with a carrying addition is taught a wrong chain, which the exact verifier catches (and
    # its answer is wrong too, unless a later operation maps the slipped value back, e.g. a multiplication by 0)
    wrong = [p for p in taught if not all(slipping.verify_steps(p, list(p.reference_steps)))]
    wrong_answer = [p for p in wrong if p.reference_steps[-1] != f"Answer: {p.answer}"]
    assert len(wrong) > 20 and len(wrong_answer) > 0.9 * len(wrong)
    path = write_gsm8k_file(tmp_path / "gsm8k.jsonl")
    with pytest.raises(UserError, match="data.slip_rate"):
        get_task(DataConfig(task="gsm8k", source=str(path), slip_rate=0.5))
    with pytest.raises(UserError, match="data.slip_borrow: only the embedded task"):
        get_task(DataConfig(task="gsm8k", source=str(path), slip_borrow=True))
    # borrow slips teach more problems a wrong chain, on the same questions
    both = get_task(DataConfig(n_train=50, n_eval=5, min_steps=4, max_steps=6, slip_rate=1.0, slip_borrow=True))
    taught_both = both.sft_problems(train)
    wrong_both = [p for p in taught_both if not all(both.verify_steps(p, list(p.reference_steps)))]
    assert {p.id for p in wrong} < {p.id for p in wrong_both}


def test_sft_min_steps_adds_shorter_training_problems_only():
    cfg = DataConfig(n_train=200, n_eval=20, min_steps=4, max_steps=6, sft_min_steps=1)
    task = get_task(cfg)
    train, held_out = task.problems()
    sft = task.sft_problems(train)
    operations = [len(arith.parse_question(p.question).operations) for p in sft]
    assert min(operations) == 1 and max(operations) == 6 and len(sft) == 200
    assert min(len(arith.parse_question(p.question).operations) for p in train + held_out) == 4  # RL, eval: 4-6
    assert not {p.question for p in sft} & {p.question for p in held_out}  # the held-out bucket stays out
    with pytest.raises(UserError, match="data.sft_min_steps"):
        get_task(DataConfig(min_steps=2, max_steps=3, sft_min_steps=4))
