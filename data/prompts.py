"""Prompts: a question becomes the text the policy continues (a template, or the tokenizer's chat template), and
that text becomes token ids with the special tokens its tokenizer defines.

Rules, stated once and used by SFT, rollouts, Monte Carlo labelling, evaluation and the PRM:
- ``template`` holds ``{question}``, replaced literally (other braces, e.g. ``\\boxed{}``, stay as written).
- With ``chat_template``, the rendered template is the user message (after an optional system message), and the
  tokenizer's chat template renders the conversation with the assistant turn opened (``add_generation_prompt``).
- Encoding a prompt adds the tokenizer's special tokens (e.g. Llama's BOS) unless the text already starts with the
  BOS token's text (a chat template that writes it, as Llama 3's does), so a prompt never carries two BOS tokens.
  Completions and solution steps are encoded without special tokens; the policy ends them with an EOS id.
"""

from __future__ import annotations

from typing import Any

from ..utils.errors import UserError

QUESTION_FIELD = "{question}"


class Prompter:
    """question -> prompt text, and prompt text -> token ids, for one tokenizer (rules in the module docstring)."""

    def __init__(self, tokenizer: Any, template: str = "{question}\n", chat_template: bool = False,
                 system_prompt: str = "") -> None:
        if QUESTION_FIELD not in template:
            raise UserError(f"policy.prompt_template: {template[:60]!r} has no '{{question}}' field")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise UserError(f"policy.chat_template: the tokenizer of {name!r} has no chat template; "
                            "set policy.chat_template=false to use policy.prompt_template as plain text")
        if system_prompt and not chat_template:
            raise UserError("policy.system_prompt: needs policy.chat_template=true (a plain prompt has no system turn)")
        self.tokenizer, self.template = tokenizer, template
        self.chat_template, self.system_prompt = chat_template, system_prompt

    @classmethod
    def of(cls, policy_cfg: Any, tokenizer: Any) -> Prompter:
        """The prompter a PolicyConfig describes (prompt_template, chat_template, system_prompt)."""
        return cls(tokenizer, policy_cfg.prompt_template, policy_cfg.chat_template, policy_cfg.system_prompt)

    def __call__(self, question: str) -> str:
        """The prompt text for ``question``."""
        user = self.template.replace(QUESTION_FIELD, question)
        if not self.chat_template:
            return user
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt text."""
        return [encode_prompt(self.tokenizer, prompt) for prompt in prompts]


def adds_special_tokens(tokenizer: Any, text: str) -> bool:
    """Whether encoding ``text`` as a prompt should add the tokenizer's special tokens (not if it holds BOS already)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt text (special tokens as the tokenizer adds them, BOS never twice)."""
    return list(tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, text))["input_ids"])
