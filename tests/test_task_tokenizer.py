"""Tests for data/task_tokenizer.py: char and BPE tokenizer round trips, special ids, save/load keeping left padding."""

from transformers import AutoTokenizer

from prmloop.data.task_tokenizer import build_bpe_tokenizer, build_task_tokenizer

TEXTS = ["7 + 5 * 3 - 4 = ? (left to right)\n", "7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32", "  a  b\n\n"]


def test_task_tokenizer_round_trip_one_token_per_char():
    tokenizer = build_task_tokenizer()
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text)
        assert tokenizer.decode(ids) == text


def test_task_tokenizer_special_ids():
    tokenizer = build_task_tokenizer()
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id == 2
    assert tokenizer.padding_side == "left"
    assert tokenizer("€")["input_ids"] == [tokenizer.unk_token_id]


def test_task_tokenizer_save_and_auto_load(tmp_path):
    tokenizer = build_task_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.pad_token_id == tokenizer.pad_token_id
    assert loaded.eos_token_id == tokenizer.eos_token_id
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text
    batch = loaded(["12", "1"], padding=True)
    assert batch["input_ids"][1][0] == loaded.pad_token_id  # padded on the left
    assert batch["attention_mask"] == [[1, 1], [0, 1]]


def test_bpe_tokenizer_round_trip(tmp_path):
    tokenizer = build_bpe_tokenizer(TEXTS * 20, vocab_size=300)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    for text in TEXTS + ["unseen text: √16 × 3 €"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # merges make it shorter than one token per char on its training text
    assert len(tokenizer(TEXTS[1])["input_ids"]) < len(TEXTS[1])
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.decode(loaded(TEXTS[1])["input_ids"]) == TEXTS[1]
