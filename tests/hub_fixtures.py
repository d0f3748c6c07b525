"""Test helpers: tiny random hub-like model dirs (qwen2, llama, gpt2, mistral) and GSM8K/MATH/MATH-500 JSONL files.

Each model dir holds ``save_pretrained`` output of a real architecture (config, weights, generation_config) and a
byte-level BPE tokenizer trained offline on math text, with that family's hub conventions for BOS/EOS/pad and chat
template, so code written for real checkpoints can be tested without network access. Everything is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ARCHS = ("qwen2", "llama", "gpt2", "mistral")
VOCAB_SIZE = 500
MAX_POSITIONS = 512
QWEN_PRETOKENIZE = (  # the Split regex of Qwen2.5's tokenizer.json (and of transformers' Qwen2Tokenizer)
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '### ' + message['role'] | capitalize + ':\\n' }}"
    "{{- message['content'] }}{%- if message['role'] == 'assistant' %}{{- eos_token }}{%- endif %}{{- '\\n\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '### Assistant:\\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] + '\\n\\n' %}"
    "{%- set turns = messages[1:] %}{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in turns %}{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('after an optional system message, roles must be user or assistant') }}"
    "{%- endif %}{%- endfor %}"
)
_LLAMA_ROLES = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
SPECIAL_TOKENS = {  # family -> (special tokens in hub id order, tokenizer kwargs); llama/mistral's take ids 0, 1, 2
    "qwen2": (
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    "llama": (("<unk>", "<s>", "</s>"), _LLAMA_ROLES),
    "gpt2": (("<|endoftext|>",), dict.fromkeys(("bos_token", "eos_token", "unk_token"), "<|endoftext|>")),
    "mistral": (("<unk>", "<s>", "</s>"), _LLAMA_ROLES),
}
SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
QWEN_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
NAMES = ("Tom", "Maria", "Ava", "Liam", "Ken", "Zoe")  # problem i uses NAMES[i % 6]: kinds 0 and 2 fit he / she


# ---------------------------------------------------------------- GSM8K / MATH rows


def gsm8k_rows(n: int = 8) -> list[dict[str, str]]:
    """``n`` GSM8K-format rows ``{question, answer}``: rationale lines with ``<<a+b=c>>`` annotations, then ``#### N``."""
    rows = []
    for i in range(n):
        name, kind = NAMES[i % len(NAMES)], i % 3
        if kind == 0:
            a, b, c = 5 + i, 7 + 2 * i, 3 + i // 2
            s, r = a + b, a + b - c
            question = (
                f"{name} has {a} apples and buys {b} more. Then he gives away {c}. How many apples does he have now?"
            )
            lines = [
                f"{name} has {a} + {b} = <<{a}+{b}={s}>>{s} apples.",
                f"After giving away {c} he has {s} - {c} = <<{s}-{c}={r}>>{r} apples.",
            ]
        elif kind == 1:
            boxes, per, extra = 25 + i, 48 + 2 * i, 5 + i
            x = boxes * per
            r = x + extra
            question = (
                f"A school orders {boxes} boxes of pencils with {per} pencils in each box. It already had {extra} "
                "pencils. How many pencils does it have now?"
            )
            lines = [
                f"The boxes hold {boxes} * {per} = <<{boxes}*{per}={x}>>{x:,} pencils.",
                f"So it has {x} + {extra} = <<{x}+{extra}={r}>>{r:,} pencils in all.",
            ]
        else:
            total, more = 48 + 2 * i, 6 + i
            half = total // 2
            r = half + more
            question = (
                f"{name} has {total} stickers and gives half of them to a friend. Then she buys {more} more. "
                "How many stickers does she have?"
            )
            lines = [
                f"Half of the stickers is {total}/2 = <<{total}/2={half}>>{half} stickers.",
                f"She then has {half} + {more} = <<{half}+{more}={r}>>{r} stickers.",
            ]
        rows.append({"question": question, "answer": "\n".join([*lines, f"#### {r:,}"])})
    return rows


def _math_item(i: int) -> tuple[str, list[str], str, str]:
    """(problem, solution paragraphs, answer, subject) of MATH-style problem ``i``; each answer is exact."""
    kind = i % 3
    if kind == 0:
        a, b = 2 + i, 3 + i
        problem = f"Simplify $\\frac{{{a}}}{{{b}}} \\cdot \\frac{{{b}}}{{{2 * a}}}$."
        product = f"\\frac{{{a}}}{{{b}}} \\cdot \\frac{{{b}}}{{{2 * a}}} = \\frac{{{a * b}}}{{{2 * a * b}}}"
        paragraphs = [
            f"We multiply the numerators and the denominators:\n$${product}.$$",
            f"Cancelling the common factor ${a * b}$ leaves $\\boxed{{\\frac{{1}}{{2}}}}$.",
        ]
        return problem, paragraphs, "\\frac{1}{2}", "Prealgebra"
    if kind == 1:
        k = 8 + i
        total = k * (k + 1) // 2
        problem = f"What is the sum of the first ${k}$ positive integers?"
        paragraphs = [
            "The sum of the first $n$ positive integers is $\\frac{n(n+1)}{2}$.",
            f"With $n = {k}$ this is\n$$\\frac{{{k} \\cdot {k + 1}}}{{2}} = \\frac{{{k * (k + 1)}}}{{2}}.$$",
            f"So the sum is $\\boxed{{{total}}}$.",
        ]
        return problem, paragraphs, str(total), "Algebra"
    a, x, b = 3 + i, 4 + i, 2 * i + 1
    c = a * x + b
    problem = f"Solve for $x$: ${a}x + {b} = {c}$."
    paragraphs = [
        f"Subtracting ${b}$ from both sides gives ${a}x = {c - b}$.",
        f"Dividing both sides by ${a}$ gives $x = \\frac{{{c - b}}}{{{a}}} = \\boxed{{{x}}}$.",
    ]
    return problem, paragraphs, str(x), "Algebra"


def math_answers(n: int = 6) -> list[str]:
    """The reference answers of the first ``n`` MATH-style problems (what ``\\boxed{}`` holds)."""
    return [_math_item(i)[2] for i in range(n)]


def math_rows(n: int = 6) -> list[dict[str, str]]:
    """``n`` MATH-format rows ``{problem, solution, level, type}``; solutions are paragraphs ending in ``\\boxed{}``."""
    items = (_math_item(i) for i in range(n))
    return [
        {"problem": p, "solution": "\n\n".join(s), "level": f"Level {1 + i % 5}", "type": t}
        for i, (p, s, _, t) in enumerate(items)
    ]


def math500_rows(n: int = 4) -> list[dict]:
    """``n`` MATH-500-format rows ``{problem, solution, answer, subject, level, unique_id}`` (level is an int)."""
    rows = []
    for i, row in enumerate(math_rows(n)):
        subject, answer = row.pop("type"), math_answers(n)[i]
        unique_id = f"test/{subject.lower()}/{100 + i}.json"
        rows.append({**row, "answer": answer, "subject": subject, "level": 1 + i % 5, "unique_id": unique_id})
    return rows


def _write_jsonl(path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_gsm8k_file(path, n: int = 8) -> Path:
    """Write ``gsm8k_rows(n)`` as JSONL to ``path``; returns the path."""
    return _write_jsonl(path, gsm8k_rows(n))


def write_math_file(path, n: int = 6) -> Path:
    """Write ``math_rows(n)`` as JSONL to ``path``; returns the path."""
    return _write_jsonl(path, math_rows(n))


def write_math500_file(path, n: int = 4) -> Path:
    """Write ``math500_rows(n)`` as JSONL to ``path``; returns the path."""
    return _write_jsonl(path, math500_rows(n))


# ---------------------------------------------------------------- tokenizers


def math_corpus() -> list[str]:
    """Training text: GSM8K questions and rationales, MATH problems and solutions, and common answer phrasings."""
    texts = []
    for row in gsm8k_rows(24):
        texts += [row["question"], row["answer"], f"{row['question']}\n\n{row['answer']}"]
    for row in math_rows(12):
        texts += [row["problem"], row["solution"]]
    texts += [f"Step {k}: {k} + {k} = {2 * k}.\nThe answer is {10 * k + 5}.\n\n#### {10 * k + 5}" for k in range(10)]
    texts += ["Let's think step by step.\n\nSo the final answer is $\\boxed{45}$.", "The answer is 45"]
    return texts * 2


def build_hub_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab ~VOCAB_SIZE) with ``arch``'s hub special-token conventions (no template)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    specials, roles = SPECIAL_TOKENS[arch]
    bos_added = arch in ("llama", "mistral")
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    if arch == "qwen2":  # what Qwen2.5's tokenizer.json does, so AutoTokenizer's Qwen2Tokenizer rebuild gives same ids
        tokenizer.normalizer = normalizers.NFC()
        split = pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(False, use_regex=False)])
    else:  # no regex split: merges cross spaces and newlines, so one token can span a step boundary
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    leading = list(specials) if bos_added else []
    alphabet, quiet = pre_tokenizers.ByteLevel.alphabet(), {"show_progress": False}
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=leading, initial_alphabet=alphabet, **quiet)
    tokenizer.train_from_iterator(math_corpus(), trainer=trainer)
    if bos_added:  # tokenizer.json's post-processor adds the BOS; transformers 5 keeps it on reload
        bos = [("<s>", 1)]
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=bos
        )
    else:  # after the BPE vocab, as on the hub
        tokenizer.add_special_tokens(list(specials))
    extra = {"additional_special_tokens": ["<|im_start|>"]} if arch == "qwen2" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, model_max_length=MAX_POSITIONS, **roles, **extra
    )


# ---------------------------------------------------------------- models


def _model(arch: str, tokenizer: PreTrainedTokenizerFast, ids: dict[str, int | None]):
    """A tiny random model of ``arch``; qwen2's embedding is padded past len(tokenizer), as on the hub."""
    vocab = len(tokenizer)
    if arch == "gpt2":
        sizes = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "n_positions": MAX_POSITIONS}
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, bos_token_id=ids["bos"], eos_token_id=ids["eos"], **sizes))
    token_ids = {f"{role}_token_id": token for role, token in ids.items()}
    common = {**SIZES, "num_key_value_heads": 2, "max_position_embeddings": MAX_POSITIONS, **token_ids}
    if arch == "qwen2":
        config = Qwen2Config(vocab_size=-(-vocab // 64) * 64, tie_word_embeddings=True, **common)
        return Qwen2ForCausalLM(config)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, **common))
    return MistralForCausalLM(MistralConfig(vocab_size=vocab, sliding_window=None, tie_word_embeddings=False, **common))


def build_hub_model(arch: str, out_dir, seed: int = 0, chat_template: bool | None = None) -> Path:
    """Write a tiny random ``arch`` model, its tokenizer and generation_config to ``out_dir``; returns the dir.

    ``chat_template``: None -> the family default (qwen2 ChatML, llama ``### Role:`` turns after the BOS string,
    mistral ``[INST] ... [/INST]``; gpt2 has none); True -> the same but an error for gpt2; False -> no template.
    """
    tokenizer = build_hub_tokenizer(arch)
    template = {"qwen2": CHATML_TEMPLATE, "llama": LLAMA_TEMPLATE, "mistral": MISTRAL_TEMPLATE}.get(arch)
    if chat_template is True and template is None:
        raise ValueError(f"{arch} has no chat template convention")
    if chat_template is not False and template is not None:
        tokenizer.chat_template = template
    token_id = tokenizer.convert_tokens_to_ids
    if arch == "qwen2":
        ids = {"bos": token_id("<|endoftext|>"), "eos": token_id("<|im_end|>"), "pad": token_id("<|endoftext|>")}
        eos = [ids["eos"], ids["bos"]]  # Qwen2.5-Instruct's generation_config.json, sampling defaults included
        generation = GenerationConfig(
            bos_token_id=ids["bos"], eos_token_id=eos, pad_token_id=ids["pad"], **QWEN_SAMPLING
        )
    else:
        ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": None}
        generation = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    torch.manual_seed(seed)
    model = _model(arch, tokenizer, ids)
    model.generation_config = generation
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
