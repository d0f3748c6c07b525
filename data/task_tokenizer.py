"""Tokenizers built offline with the `tokenizers` library: the embedded task's character tokenizer, and a small BPE one.

Both are returned as ``PreTrainedTokenizerFast`` with pad and eos set, so they save with ``save_pretrained`` and load with
``AutoTokenizer.from_pretrained(dir)`` like any hub tokenizer. The BPE tokenizer exists so tests exercise the general
code path where one token can span a step boundary.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

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


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""Saved tokenizer classes that mean 'exactly this tokenizer.json' (e.g. the tokenizers built above)."""


def load_tokenizer(path_or_name: str | Path):
    """The tokenizer saved at ``path_or_name``, as saved.

    transformers 5's AutoTokenizer prefers the class of the model type in config.json (e.g. Qwen2Tokenizer for a
    qwen2 model) over a generic saved class, and so rebuilds a custom BPE tokenizer with other pre-tokenization
    rules; a generic saved class is therefore loaded as PreTrainedTokenizerFast, which reads tokenizer.json as is.
    Hub names (no local directory) go through AutoTokenizer.
    """
    from transformers import AutoTokenizer

    config_file = Path(path_or_name) / "tokenizer_config.json"
    if config_file.is_file():
        saved_class = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if saved_class in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(path_or_name)
    return AutoTokenizer.from_pretrained(path_or_name)
