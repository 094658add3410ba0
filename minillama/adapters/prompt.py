"""Prompt tuning (Lester et al. 2021): P trainable input embeddings before the input's.

Only the embedding layer sees the prompt [P, dim]; every layer then treats it as P
tokens read first (positions 0..P-1), so the input starts at position P.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict

import torch
from torch import nn

from .base import AdaptedModel
from .prefix_config import PrefixConfig
from .prefix_init import start_embeddings


class PromptTuningConfig(PrefixConfig):
    """Prompt tuning: the prefix family's settings, at the embeddings only."""

    method = "prompt"
    summary: ClassVar[str] = "input embeddings (Lester et al.)"
    task_lr: ClassVar[Dict[str, float]] = {"e2e": 3e-2}  # --task e2e: the lowest dev loss in bench/e2e_accuracy.py's sweep (docs/guide.md, E2E)
    task_settings: ClassVar[Dict[str, Dict[str, Any]]] = {}


class PromptTuning(AdaptedModel):
    """The base reading `prompt` [P, dim] before every input."""

    method = "prompt"

    def __init__(self, base: nn.Module, cfg: PrefixConfig, tokenizer=None):
        super().__init__(base, cfg)
        cfg.check_fits(base.input_room)
        self.length = self.virtual_tokens = cfg.length
        self.prompt = nn.Parameter(start_embeddings(base, cfg, tokenizer))  # [P, dim]

    def prefix_tensor(self) -> torch.Tensor:
        """The prompt as used: [P, dim]."""
        return self.prompt

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        """input_ids, attention_mask: [B, T] -> outputs for the input positions only."""
        if cache is not None and cache.length > 0:  # the prompt was read at the first step
            return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)
        B = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = torch.cat([self.prompt[None].expand(B, -1, -1), self.base.embed(input_ids)], dim=1)  # [B, P+T, dim]
        mask = torch.cat([attention_mask.new_ones(B, self.length), attention_mask], dim=1)
        logits, hidden = self.base(attention_mask=mask, inputs_embeds=x, cache=cache, last_only=last_only)
        if last_only:
            return logits, hidden
        return logits[:, self.length:], hidden[:, self.length:]  # outputs line up with input_ids

    def describe(self) -> str:
        return f"prefix: mode {self.method}, length {self.length}"

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        return {"prefix": self.prompt}
