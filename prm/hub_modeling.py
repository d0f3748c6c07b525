"""prmloop's step reward model as transformers remote code, copied beside a saved PRM's weights (``modeling_prmloop.py``).

``AutoModelForTokenClassification.from_pretrained(dir, trust_remote_code=True)`` then scores as prmloop does, log-prob
features included: at every separator token (config ``prmloop_separator_id``) at or after ``prompt_lengths[b]``, the
positive class logit (``prmloop_positive_index``; a 1-logit head: logit 0) gets w · (min_t logp_t, mean_t logp_t,
min_t (logp_t − max_v logp(v)_t)) added, over the step's own tokens t (after the previous separator, or the prompt,
up to the token before this separator), with w = ``prmloop_logp_weight``. P(step correct) = softmax(logits)[..., 1]
(2 classes) or sigmoid(logits[..., 0]) (1 logit) at the separator. With no log-prob weights it is exactly the standard
token-classification model. Needs only torch and transformers: the file must stand alone (prmloop writes it with the
three lines marked PRMLOOP filled in for the backbone's config class, base-model prefix and head name).
"""

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import Qwen2Config as PrmloopConfig  # PRMLOOP:config
from transformers.modeling_outputs import TokenClassifierOutput

BASE_MODEL_PREFIX = "model"  # PRMLOOP:prefix
HEAD_NAME = "score"  # PRMLOOP:head


def _token_logp_and_margin(lm_logits, input_ids):
    """(B, T) log p(x_t | x_<t) and its margin to the argmax; 0 at t = 0 (nothing predicts the first token)."""
    logp_all = torch.log_softmax(lm_logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    logp = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    margin = logp - logp_all.max(dim=-1).values  # (B, T-1)
    zero = torch.zeros_like(logp[:, :1])
    return torch.cat([zero, logp], dim=1), torch.cat([zero, margin], dim=1)


class PrmloopForTokenClassification(PreTrainedModel):
    """A backbone, a token-classification head and (untied models) the LM head for the log-prob features."""

    config_class = PrmloopConfig
    base_model_prefix = BASE_MODEL_PREFIX
    head_name = HEAD_NAME
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True  # the backbone's

    def __init__(self, config):
        super().__init__(config)
        text = config.get_text_config()
        setattr(self, self.base_model_prefix, AutoModel.from_config(config))
        setattr(self, self.head_name, nn.Linear(text.hidden_size, config.num_labels))
        tied = getattr(text, "tie_word_embeddings", False)
        self.lm_head = None if tied else nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    def step_bonus(self, hidden, input_ids, prompt_lengths):
        """(B, T) w · features of the step each separator at/after the prompt closes; 0 elsewhere."""
        weight = torch.tensor(self.config.prmloop_logp_weight, dtype=torch.float32, device=hidden.device)  # (3,)
        embeddings = getattr(self, self.base_model_prefix).get_input_embeddings().weight
        lm_weight = embeddings if self.lm_head is None else self.lm_head.weight  # (V, H)
        token_logp, token_margin = _token_logp_and_margin(hidden @ lm_weight.T, input_ids)  # (B, T) each
        bonus = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)  # (B, T)
        for row in range(input_ids.shape[0]):
            start = int(prompt_lengths[row])
            for end in range(start, input_ids.shape[1]):
                if int(input_ids[row, end]) != self.config.prmloop_separator_id:
                    continue
                last = max(start, end - 1)  # a step with no token of its own reads its separator
                logp, margin = token_logp[row, start : last + 1], token_margin[row, start : last + 1]
                features = torch.stack([logp.min(), logp.mean(), margin.min()])  # (3,)
                bonus[row, end] = features @ weight
                start = end + 1
        return bonus

    def forward(self, input_ids=None, attention_mask=None, prompt_lengths=None, **kwargs):
        """Token logits (B, T, C); ``prompt_lengths`` (B,) = prompt tokens per row, needed with log-prob features."""
        hidden = getattr(self, self.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = getattr(self, self.head_name)(hidden).float()  # (B, T, C)
        if getattr(self.config, "prmloop_logp_weight", None) is None:
            return TokenClassifierOutput(logits=logits)
        if prompt_lengths is None:
            raise ValueError("this prmloop PRM adds log-prob features of each step: pass prompt_lengths (B,), the "
                             "number of prompt tokens of each row, so the first step's span is known")
        column = self.config.prmloop_positive_index if logits.shape[-1] > 1 else 0
        logits[..., column] = logits[..., column] + self.step_bonus(hidden.float(), input_ids, prompt_lengths)
        return TokenClassifierOutput(logits=logits)
