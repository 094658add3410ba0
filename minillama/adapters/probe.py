"""Probing (feature-based adaptation, "training only the output layers"): the whole model
frozen, only a classification head trained on its final hidden states.

    logits = head(dropout(h)),   h [dim]: the frozen model's final hidden state of the last real
                                 token (or the mean over the real tokens: --prefix_head mean)
    linear: head = Linear(dim, K)
    mlp:    head = Linear(h_width, K) . GELU . Linear(dim, h_width), h_width = dim (the features' own
            width, as RoBERTa's classification head; GELU, the transformers' own non-linearity)

Nothing is added to the model: the backbone is the base, always in eval mode (dropout off, so
the features are a pure function of a sentence's tokens), and `make_head` gives the classifier
the head to train.  That is what lets classification compute every sentence's features once
(heads.FeatureCache): each epoch then costs only the head.  The adapter file holds the head
(the `head.*` tensors every classification head travels as) and this config (which head).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MinillamaError
from ..flags import flag
from .base import AdaptedModel, AdapterConfig

HEADS = ("linear", "mlp")


@dataclass
class ProbeConfig(AdapterConfig):
    """--option probe: the frozen model read by a trained head (--probe_head)."""

    method: ClassVar[str] = "probe"
    summary: ClassVar[str] = "only a head, on the frozen model's features"
    tasks: ClassVar[Tuple[str, ...]] = ("classify",)  # a head over classes: nothing to generate
    # A fresh head on frozen features takes far larger steps than the course's 2e-5 for the whole
    # model: the best SST dev accuracy, mean over both heads, of a sweep over 1e-3..1e-1 on
    # stories260K (RESULTS.md, "Probing").
    default_lr: ClassVar[float] = 1e-2
    head: str = flag("linear", "--probe_head", choices=HEADS,
                     help="linear: one linear layer; mlp: two (hidden width = model width, GELU) (default {default})")

    def __post_init__(self):
        if self.head not in HEADS:
            raise MinillamaError(f"--probe_head must be one of {', '.join(HEADS)}, got {self.head!r}")


class MLPHead(nn.Module):
    """[..., dim] -> [..., K]: out(gelu(hidden(h))), hidden Linear(dim, width), out Linear(width, K)."""

    def __init__(self, dim: int, width: int, num_labels: int):
        super().__init__()
        self.hidden = nn.Linear(dim, width)
        self.out = nn.Linear(width, num_labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.hidden(h)))


class Probe(AdaptedModel):
    """The frozen base as the backbone, kept in eval mode; what trains is the head `make_head`
    builds (the classifier's)."""

    method = "probe"
    frozen_features = True  # heads.HeadClassifier may cache what it reads (heads.FeatureCache)

    def __init__(self, base: nn.Module, cfg: ProbeConfig, tokenizer=None):
        super().__init__(base, cfg)
        self.train(False)

    def train(self, mode: bool = True) -> "Probe":
        """Always eval: a classifier's .train() must not turn the frozen model's dropout on."""
        return super().train(False)

    def describe(self) -> str:
        return f"probe: the frozen model, a {self.cfg.head} head"

    def make_head(self, num_labels: int) -> nn.Module:
        """The head to train on this model's features [..., dim] -> [..., num_labels]."""
        dim = self.config.dim
        if self.cfg.head == "mlp":
            return MLPHead(dim, dim, num_labels)
        return nn.Linear(dim, num_labels)

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        """Nothing of the model's: the file holds the head's tensors (head.*) alone."""
        return {}
