"""Tokenizers built offline with the `tokenizers` library: the embedded task's character tokenizer, and a small BPE one.

Both are returned as ``PreTrainedTokenizerFast`` with pad and eos set, so they save with ``save_pretrained`` and load with
``AutoTokenizer.from_pretrained(dir)`` like any hub tokenizer. The BPE tokenizer exists so tests exercise the general
code path where one token can span a step boundary.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
TASK_ALPHABET = string.digits + string.ascii_letters + " \n+-*/=().,:;?!'"
"""Every character the embedded task's text uses (and a few spare ones); anything else maps to <unk>."""


def build_task_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: digits never merge, so arithmetic is learnable by a tiny model and decoding is exact."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in TASK_ALPHABET:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer)


def build_bpe_tokenizer(corpus: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus``; merges cross spaces and newlines, as real LLM tokenizers do."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _wrap(tokenizer)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",  # decoder-only generation pads on the left; saved in tokenizer_config.json
        clean_up_tokenization_spaces=False,
    )
    return wrapped
