"""Step-level beam search with a PRM (`prmloop search --strategy beam`): W prefixes, E one-step expansions each.

Follows search-and-learn's beam search ("Scaling LLM Test-Time Compute Optimally", Snell et al. 2024, §5.1): for each
problem start from the prompt; at every step each of the W kept prefixes gets E sampled continuations of ONE step,
every extended prefix is scored by the PRM (its step scores aggregated with ``prm.metrics.AGGREGATIONS``), and the
best are kept. A prefix that ended (EOS, a final answer, the task's step limit or the policy's token limit) is set
aside as complete; the search stops once W prefixes are complete or no prefix is left. The answer is the complete
solution with the highest score. Departures from the paper:
- one step is sampled as a short generation (``step_tokens`` new tokens at most) cut at its first step end
  (``cut_at_step_end``); every generated token, including the ones cut away, counts in the problem's token budget;
  a step longer than ``step_tokens`` is kept as cut off (the next step then starts after a separator), so the budget
  must exceed the task's longest step (16 fits the embedded task's lines);
- W - (complete so far) prefixes are kept at each step, so W solutions in all are kept (the paper keeps N/M active
  beams and lets completed ones leave the pool the same way);
- a prefix is complete once its own tokens (its steps and separators, re-encoded) reach policy.max_new_tokens.
Every expansion call of the sampler is seeded (``policy.rollout.PolicySampler``: call k, prompt i, sample g), so a
run is reproducible.

``dvts`` (`prmloop search --strategy dvts`, diverse verifier tree search as in search-and-learn) splits the same W * E
budget into W independent subtrees: each is this beam search with width 1 and E expansions, run from its own seeds,
and the answer is the best complete solution over the W subtrees (they never compete, so the finals stay diverse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..prm.metrics import get_aggregation

Scorer = Callable[[list[str], list[list[list[str]]]], list[list[list[float]]]]
"""(prompts, per problem: candidate step lists) -> per problem: each candidate's step scores (``group_scores``)."""


@dataclasses.dataclass
class Beam:
    """One prefix of a solution."""

    steps: list[str]
    """Its steps so far (stripped, no separators)."""
    length: int = 0
    """Its own length in tokens (the kept steps and their separators, ``length_of``)."""
    score: float = 0.0
    """Its aggregated PRM score."""
    complete: bool = False
    """Ended: EOS, a final answer, or a step/token limit."""


@dataclasses.dataclass
class Expansion:
    """One sampled step continuation of a prefix."""

    step: str
    """The first step of the generation (stripped; '' when the generation held no step)."""
    tokens: int
    """Generated tokens of the WHOLE generation (EOS included), not only those kept."""
    ended: bool
    """The generation finished the solution: EOS with nothing after this step."""


def keep_best(scores: list[float], width: int) -> list[int]:
    """Indices of the ``width`` highest scores, best first; ties go to the earlier candidate."""
    return sorted(range(len(scores)), key=lambda index: (-scores[index], index))[:max(width, 0)]


def cut_at_step_end(text: str, separator: str, tokens: int, budget: int) -> Expansion:
    """The first step of a generated ``text`` of ``tokens`` tokens (EOS included) from a ``budget``-token sampler.

    The step ends at the first ``separator`` after its first non-blank character. The generation hit EOS iff it used
    fewer than ``budget`` tokens (the sampler counts the EOS; a row cut off at the budget has exactly ``budget``); it
    ended the solution if it hit EOS and nothing but blanks follows the step. ``tokens`` is kept whole.
    """
    start = len(text) - len(text.lstrip())
    end = text.find(separator, start) if separator else -1
    step, rest = (text, "") if end < 0 else (text[:end], text[end:])
    return Expansion(step.strip(), tokens, tokens < budget and not rest.strip())


def extend(beam: Beam, expansion: Expansion, is_final: Callable[[str], bool], max_steps: int | None,
           max_length: int, length_of: Callable[[list[str]], int]) -> Beam:
    """The prefix ``beam`` plus one expansion (score not yet set); complete when it ended the solution, states a
    final answer, reached ``max_steps`` steps or ``max_length`` tokens of its own (``length_of(steps)``)."""
    steps = [*beam.steps, expansion.step] if expansion.step else list(beam.steps)
    length = length_of(steps) if expansion.step else beam.length + expansion.tokens  # no step: only tokens spent
    complete = (expansion.ended or (bool(expansion.step) and is_final(expansion.step))
                or (max_steps is not None and len(steps) >= max_steps) or length >= max_length)
    return Beam(steps, length, 0.0, complete)


@dataclasses.dataclass
class BeamResult:
    """One problem's search."""

    best: Beam
    """The complete solution with the highest score (a kept prefix if none completed)."""
    tokens: int
    """Every generated token of the problem's search."""


def beam_search(questions: list[str], prompt_of: Callable[[str, list[str]], str], sample, score: Scorer,
                separator: str, step_budget: int, width: int, expansions: int, aggregation: str,
                is_final: Callable[[str], bool], max_steps: int | None, max_length: int,
                length_of: Callable[[list[str]], int]) -> list[BeamResult]:
    """Beam search on every problem at once (one sampler call and one scoring pass per step, over all problems).

    ``prompt_of(question, steps)`` is the text the policy continues (``loop.stages.format_prefix_for``);
    ``sample(prompts, n)`` -> (texts, token counts), n per prompt (``PolicySampler.complete_counted`` with
    max_new_tokens = ``step_budget``); ``score(prompts, candidates)`` -> step scores (``prm.scoring_eval.group_scores``);
    ``length_of(steps)`` -> tokens of a prefix's own text.
    """
    aggregate = get_aggregation(aggregation)
    active = [[Beam([])] for _ in questions]
    complete: list[list[Beam]] = [[] for _ in questions]
    tokens = [0] * len(questions)
    while True:
        live = [p for p, beams in enumerate(active) if beams and len(complete[p]) < width]
        if not live:
            break
        prompts = [prompt_of(questions[p], beam.steps) for p in live for beam in active[p]]
        texts, counts = sample(prompts, expansions)
        candidates: dict[int, list[Beam]] = {p: [] for p in live}
        row = 0
        for p in live:
            for beam in active[p]:
                for text, count in zip(texts[row], counts[row]):
                    tokens[p] += count
                    expansion = cut_at_step_end(text, separator, count, step_budget)
                    candidates[p].append(extend(beam, expansion, is_final, max_steps, max_length, length_of))
                row += 1
        step_scores = score([prompt_of(questions[p], []) for p in live],
                            [[beam.steps for beam in candidates[p]] for p in live])
        for p, problem_scores in zip(live, step_scores):
            for beam, scores in zip(candidates[p], problem_scores):
                beam.score = aggregate(scores)
            kept = [candidates[p][index] for index in keep_best([b.score for b in candidates[p]],
                                                                 width - len(complete[p]))]
            complete[p].extend(beam for beam in kept if beam.complete)
            active[p] = [beam for beam in kept if not beam.complete]
    results = []
    for p in range(len(questions)):
        pool = complete[p] or active[p] or [Beam([])]
        results.append(BeamResult(pool[keep_best([beam.score for beam in pool], 1)[0]], tokens[p]))
    return results


def dvts(questions: list[str], prompt_of: Callable[[str, list[str]], str], sample, score: Scorer, separator: str,
         step_budget: int, subtrees: int, expansions: int, aggregation: str, is_final: Callable[[str], bool],
         max_steps: int | None, max_length: int, length_of: Callable[[list[str]], int]) -> list[BeamResult]:
    """Diverse verifier tree search (search-and-learn's DVTS): per problem, ``subtrees`` (W) independent beam searches
    of width 1, each sampling ``expansions`` (E) one-step continuations of its single prefix per step and keeping the
    PRM-best; the subtrees never compete, and the answer is the best-scored complete solution over them.

    It is ``beam_search`` with width 1 on every problem repeated W times (one batch: subtree w of problem p is row
    p * W + w, so with a seeded sampler each subtree draws from its own seeds), then the best of each problem's W
    results; its tokens are the W subtrees' tokens summed. Arguments as ``beam_search``.
    """
    runs = beam_search([question for question in questions for _ in range(subtrees)], prompt_of, sample, score,
                       separator, step_budget, 1, expansions, aggregation, is_final, max_steps, max_length, length_of)
    results = []
    for p in range(len(questions)):
        trees = runs[p * subtrees:(p + 1) * subtrees]
        pool = [tree.best for tree in trees if tree.best.complete] or [tree.best for tree in trees]
        results.append(BeamResult(pool[keep_best([beam.score for beam in pool], 1)[0]],
                                  sum(tree.tokens for tree in trees)))
    return results
