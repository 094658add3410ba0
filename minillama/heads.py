"""Answer readers on top of a backbone: they turn a text into one score per label.

- `HeadClassifier`: a linear head on the final hidden state of the last real token
  (finetune, lora, the prefix family's default "cls" head).
- `VerbalizerClassifier`: the LM's own log-likelihood of each label name after the
  text (zero-shot prompting, the prefix family's "verbalizer" head, and MMLU, whose
  answer letters are single-token names).

A backbone is any module with
    forward(input_ids [B, T], attention_mask [B, T], last_only=False)
        -> (logits [B, T, vocab], hidden [B, T, dim]), or [B, 1, ...] when last_only
that accepts left or right padding (the Llama and every adapters/ backbone do).
Both readers take right-padded batches and left-pad them, so one last_only pass
reads every row's last real token.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import left_pad
from .errors import MinillamaError


def label_token_ids(tokenizer, label_names: Sequence[str]) -> List[List[int]]:
    """Each label name's tokens, encoded as the course's prompting does (no BOS)."""
    return [tokenizer.encode(name, bos=False) for name in label_names]


class HeadClassifier(nn.Module):
    """logits [B, K] = W dropout(h_last) + b, h_last the last real token's final hidden state."""

    def __init__(self, backbone: nn.Module, dim: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T], right-padded -> logits [B, K]"""
        # Left-padded, every row's last real token is the last position, and last_only
        # spares the last block's queries, feed-forward and head for all other positions.
        ids, mask = left_pad(input_ids, attention_mask)
        _, hidden = self.backbone(ids, mask, last_only=True)  # [B, 1, dim]
        return self.head(self.dropout(hidden[:, -1]))


class VerbalizerClassifier(nn.Module):
    """scores [B, K] = log P(label name k | text) under the backbone's LM head,
    summed over the name's tokens (teacher-forced).

    log_probs=False (single-token names only, e.g. MMLU's letters) returns the raw
    next-token logits of the name tokens instead: the same argmax and the same
    cross-entropy over the K names (log_softmax only subtracts a per-row constant)."""

    def __init__(self, backbone: nn.Module, label_token_ids: Sequence[Sequence[int]], log_probs: bool = True):
        super().__init__()
        if any(len(ids) == 0 for ids in label_token_ids):
            raise MinillamaError("a label name encodes to no tokens: use non-empty label names")
        if not log_probs and any(len(ids) != 1 for ids in label_token_ids):
            raise MinillamaError("raw logit scores need single-token label names")
        self.backbone, self.log_probs = backbone, log_probs
        self.label_token_ids = [list(ids) for ids in label_token_ids]
        # positions the longest name adds after the text (for the context-length budget)
        self.extra_positions = max(len(ids) for ids in self.label_token_ids) - 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids, mask = left_pad(input_ids, attention_mask)
        B = ids.shape[0]
        scores = []
        first = None  # scores of the next token after the text, shared by every single-token name
        for label_ids in self.label_token_ids:
            if len(label_ids) == 1:
                if first is None:
                    logits, _ = self.backbone(ids, mask, last_only=True)
                    first = logits[:, -1].float()
                    first = F.log_softmax(first, dim=-1) if self.log_probs else first
                scores.append(first[:, label_ids[0]])
                continue
            # text + all but the last name token; the last L positions predict the L name tokens
            L = len(label_ids)
            target = torch.tensor(label_ids, device=ids.device).expand(B, L)
            full_ids = torch.cat([ids, target[:, :-1]], dim=1)
            full_mask = torch.cat([mask, torch.ones_like(target[:, :-1], dtype=mask.dtype)], dim=1)
            logits, _ = self.backbone(full_ids, full_mask)
            logp = F.log_softmax(logits[:, -L:].float(), dim=-1)             # [B, L, vocab]
            scores.append(logp.gather(2, target[..., None]).squeeze(2).sum(dim=1))
        return torch.stack(scores, dim=1)
