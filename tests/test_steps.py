"""Tests for data/steps.py: each split mode with literal offsets; step-end token alignment, char and BPE tokenizers."""

import pytest

from prmloop.data.steps import (
    Step,
    align_steps,
    split_steps,
    step_end_token_indices,
    token_char_ends_from_ids,
    token_char_ends_from_offsets,
)
from prmloop.data.task_tokenizer import build_bpe_tokenizer, build_task_tokenizer

SOLUTION = "7 + 5 = 12\n12 * 3 = 36\nAnswer: 36"
# "7 + 5 = 12" is chars 0..10, "\n" at 10, "12 * 3 = 36" 11..22, "\n" at 22, "Answer: 36" 23..33.
BPE_CORPUS = ["7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", "3 × 4 = 12\n√16 = 4\nAnswer: 12"] * 20


@pytest.fixture(scope="module")
def bpe():
    # 280 = 259 byte/special tokens + 21 merges: enough to merge across newlines ("4\nAnswer: "), too few to merge
    # the multi-byte characters "×" (2 bytes) and "√" (3 bytes), which stay split into byte tokens.
    return build_bpe_tokenizer(BPE_CORPUS, vocab_size=280)


# ---------------------------------------------------------------- splitting


def test_newline_mode():
    assert split_steps(SOLUTION) == [Step("7 + 5 = 12", 0, 10), Step("12 * 3 = 36", 11, 22), Step("Answer: 36", 23, 33)]
    # "  a = 1 \n\n b = 2\n": 'a' at 2, '1' at 6; blank line at 9; 'b' at 11, '2' at 15.
    assert split_steps("  a = 1 \n\n b = 2\n", "newline") == [Step("a = 1", 2, 7), Step("b = 2", 11, 16)]


def test_blank_line_mode():
    text = "Step one.\nStill one.\n\nStep two.\n \n\nStep three."
    # "Step one.\nStill one." 0..20; "\n\n" 20..22; "Step two." 22..31; "\n \n\n" 31..35; "Step three." 35..46.
    assert split_steps(text, "blank_line") == [
        Step("Step one.\nStill one.", 0, 20),
        Step("Step two.", 22, 31),
        Step("Step three.", 35, 46),
    ]


def test_step_marker_mode_keeps_markers_and_preamble():
    text = "Let me think. Step 1: 2 + 2 = 4. step 2: 4 * 3 = 12.\nStep 3: The answer is 12."
    # "Let me think." 0..13; "Step 1: 2 + 2 = 4." 14..32; "step 2: 4 * 3 = 12." 33..52; "Step 3: ..." 53..78.
    assert split_steps(text, "step_marker") == [
        Step("Let me think.", 0, 13),
        Step("Step 1: 2 + 2 = 4.", 14, 32),
        Step("step 2: 4 * 3 = 12.", 33, 52),
        Step("Step 3: The answer is 12.", 53, 78),
    ]


def test_tag_mode_drops_tags_and_keeps_an_unterminated_last_step():
    text = "2 + 2 = 4 ки\n4 * 3 = 12 ки\nleftover"
    # "2 + 2 = 4" 0..9, tag at 10..12; "4 * 3 = 12" 13..23, tag at 24..26; "leftover" 27..35.
    assert split_steps(text, "tag", tag="ки") == [
        Step("2 + 2 = 4", 0, 9),
        Step("4 * 3 = 12", 13, 23),
        Step("leftover", 27, 35),
    ]
    assert [s.text for s in split_steps("a ки b ки ", "tag", tag="ки")] == ["a", "b"]


@pytest.mark.parametrize("mode", ["newline", "blank_line", "step_marker"])
def test_offsets_slice_the_text(mode):
    text = "  Intro.\n\nStep 1: x = 2 ×\n3.\n\n\nStep 2: √4 = 2  \n"
    steps = split_steps(text, mode)
    assert steps and all(text[s.start : s.end] == s.text == s.text.strip() for s in steps)


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown step split mode 'lines'; valid modes: blank_line, newline, step_"):
        split_steps("a", "lines")
    with pytest.raises(ValueError, match="mode 'tag' needs a non-empty tag"):
        split_steps("a", "tag")
    with pytest.raises(ValueError, match="only used by mode 'tag'"):
        split_steps("a", "newline", tag="ки")


# ---------------------------------------------------------------- pure alignment


def test_step_end_token_indices_by_hand():
    # tokens "12", "\n1", "3" of "12\n13": ends 2, 4, 5. Step "12" ends at 2 -> token 0; "13" ends at 5 -> token 2.
    assert step_end_token_indices([2, 4, 5], [2, 5]) == [0, 2]
    # a token "2\n1" (chars 1..4) spans the boundary: step "12" (end 2) ends on it, and so does nothing else.
    assert step_end_token_indices([1, 4, 5], [2, 5]) == [1, 2]
    # one token covering three short steps: all end on it (non-decreasing, not strictly increasing).
    assert step_end_token_indices([10], [3, 7, 10]) == [0, 0, 0]
    # truncated text: the step ending at 5 runs past the last token (end 4), so it is dropped.
    assert step_end_token_indices([2, 4], [2, 5]) == [0]
    # a leading zero-width token (BOS, end 0) and a repeated end (special token after "x") never end a step.
    assert step_end_token_indices([0, 3, 3, 5], [3, 5]) == [1, 3]


def test_token_char_ends_from_offsets_by_hand():
    # BOS (0,0); "a" (0,1); "bc"+first byte of "×" reported as (1,3) and the last byte as (2,3); "d" (3,4); EOS (0,0).
    # "bc…" completes only chars up to 2 (where the next token starts); the last byte completes char 2.
    offsets = [(0, 0), (0, 1), (1, 3), (2, 3), (3, 4), (0, 0)]
    assert token_char_ends_from_offsets(offsets) == [0, 1, 2, 3, 4, 4]


# ---------------------------------------------------------------- tokenizers


def test_task_tokenizer_one_token_per_character():
    tokenizer = build_task_tokenizer()
    steps = split_steps(SOLUTION)
    # one token per character: the last char of each step (offsets 9, 21, 32) is its last token
    assert align_steps(tokenizer, SOLUTION, steps) == [9, 21, 32]
    ids = tokenizer(SOLUTION, add_special_tokens=False)["input_ids"]
    assert align_steps(tokenizer, ids, steps) == [9, 21, 32]
    assert align_steps(tokenizer, ids + [tokenizer.eos_token_id], [s.text for s in steps]) == [9, 21, 32]
    assert align_steps(tokenizer, ids[:30], steps) == [9, 21]  # truncated inside "Answer: 36": last step dropped


def _offsets(tokenizer, text):
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoding["input_ids"], encoding["offset_mapping"]


def test_bpe_boundary_token_ends_the_earlier_step(bpe):
    text = "3 × 4 = 12\n√16 = 4\nAnswer: 12"
    steps = split_steps(text)
    assert [(s.start, s.end) for s in steps] == [(0, 10), (11, 18), (19, 29)]
    ids, offsets = _offsets(bpe, text)
    spanning = [i for i, (start, end) in enumerate(offsets) if start < steps[1].end and end > steps[2].start]
    assert spanning, "the test corpus must give a token that spans the boundary of steps 1 and 2 (e.g. '4\\nAnswer: ')"
    indices = align_steps(bpe, text, steps)
    assert indices[1] == spanning[0]  # the spanning token ends step 1 ...
    assert indices[2] > indices[1]  # ... and step 2 ends on a later token
    ends = token_char_ends_from_offsets(offsets)
    for step, index in zip(steps, indices):  # the rule: the first token whose char end reaches the step's end
        assert ends[index] >= step.end and (index == 0 or ends[index - 1] < step.end)
    assert indices[-1] == len(ids) - 1


def test_bpe_short_steps_can_share_an_end_token():
    tokenizer = build_bpe_tokenizer(BPE_CORPUS, vocab_size=300)  # enough merges for whole lines to become one token
    indices = align_steps(tokenizer, SOLUTION, split_steps(SOLUTION))
    assert indices[0] == indices[1] < indices[2]


def test_bpe_multibyte_step_end_is_the_token_with_the_last_byte(bpe):
    text = "2 × 3 = 6\nroot √\nAnswer: 6"
    steps = split_steps(text)
    assert steps[1] == Step("root √", 10, 16)
    ids, _ = _offsets(bpe, text)
    index = align_steps(bpe, text, steps)[1]
    assert bpe.decode(ids[: index + 1]).endswith("root √")
    assert not bpe.decode(ids[:index]).endswith("√")  # the token before holds only the first bytes of "√"
    assert align_steps(bpe, ids, steps) == align_steps(bpe, text, steps)


@pytest.mark.parametrize("text", [SOLUTION, "3 × 4 = 12\n√16 = 4\nAnswer: 12", "√√ ×× = 0\n"])
@pytest.mark.parametrize("which", ["task", "bpe"])
def test_ends_from_ids_equal_ends_from_offsets(bpe, text, which):
    tokenizer = build_task_tokenizer() if which == "task" else bpe
    if which == "task":
        text = text.replace("×", "*").replace("√", "r")  # the task alphabet has no multi-byte characters
    ids, offsets = _offsets(tokenizer, text)
    expected = token_char_ends_from_offsets(offsets)
    assert expected[-1] == len(text)
    assert token_char_ends_from_ids(tokenizer, ids) == expected
    # a generated EOS covers no character
    assert token_char_ends_from_ids(tokenizer, ids + [tokenizer.eos_token_id]) == expected + [len(text)]


def test_ends_from_ids_decodes_linearly(bpe):
    text = "3 × 4 = 12\n√16 = 4\nAnswer: 12" * 5
    ids, _ = _offsets(bpe, text)
    calls = []

    class Counting:
        def decode(self, token_ids, **kwargs):
            calls.append(len(token_ids))
            return bpe.decode(token_ids, **kwargs)

    token_char_ends_from_ids(Counting(), ids)
    assert len(calls) <= 2 * len(ids)
    assert max(calls) <= 6  # short windows, never the whole prefix
