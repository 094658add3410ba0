"""Answer readers on top of a backbone: they turn a text into one score per label.

- `HeadClassifier`: a linear head on the final hidden state of the last real token
  (finetune, lora, the prefix family's "cls" head), or on the mean of the final hidden
  states of all real tokens ("mean": every position carries the prefix's gradient); any
  other head module in its place (adapters/probe.py's MLP), and over a frozen backbone a
  `FeatureCache`: what the head reads computed once per sentence.
- `VerbalizerClassifier`: the LM's own log-likelihood of each label name after the
  text (zero-shot prompting, the prefix family's "verbalizer" head, and MMLU, whose
  answer letters are single-token names).
- `RowReader`: rows of one batch that each read their answer their own way (one
  adapter per row, adapters/multi.py): their own cls head, or their own label names;
  trainable (tasks/multitask.py trains a head per task through it).

A backbone is any module with
    forward(input_ids [B, T], attention_mask [B, T], last_only=False)
        -> (logits [B, T, vocab], hidden [B, T, dim]), or [B, 1, ...] when last_only
that accepts left or right padding (the Llama and every adapters/ backbone do).
Both readers take right-padded batches and left-pad them, so one last_only pass
reads every row's last real token.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .data import left_pad, pad_left
from .errors import MinillamaError


def label_token_ids(tokenizer, label_names: Sequence[str]) -> List[List[int]]:
    """Each label name's tokens, encoded as the course's prompting does (no BOS)."""
    return [tokenizer.encode(name, bos=False) for name in label_names]


POOLS = ("last", "mean")


def mean_over_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, dim], mask [B, T] (1: a real token) -> [B, dim], the mean of the real tokens."""
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class FeatureCache:
    """What a frozen backbone's HeadClassifier reads, computed once per sentence.

    A backbone that never trains and stays in eval mode (adapters/probe.py) gives every row
    features [dim] that are a pure function of the row's real tokens (and of the pooling, fixed
    per classifier).  So the cache is keyed by those tokens: a row is found whatever batch it
    comes in (shuffled, re-padded, split into micro-batches or torchrun shards), and a sentence
    in two splits is one entry.  A row not yet cached is computed when first seen, in a batch
    of the missing rows alone; classification fills it split by split before training
    (tasks/classify.py, `cache_features`)."""

    def __init__(self):
        self.rows: Dict[tuple, torch.Tensor] = {}  # real tokens -> features [dim]

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> List[tuple]:
        """Each row's real tokens, as a tuple (input_ids, attention_mask: [B, T])."""
        real = attention_mask.bool()
        tokens, keys, start = input_ids[real].tolist(), [], 0  # every row's real tokens, row after row
        for n in real.sum(dim=1).tolist():
            keys.append(tuple(tokens[start:start + n]))
            start += n
        return keys

    def read(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, compute) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> features [B, dim], computing the rows not cached
        with compute(ids [b, T], mask [b, T]) -> [b, dim]."""
        keys = self.keys(input_ids, attention_mask)
        missing: Dict[tuple, int] = {}  # a sentence not cached -> its first row here
        for i, key in enumerate(keys):
            if key not in self.rows and key not in missing:
                missing[key] = i
        if missing:
            rows = torch.tensor(list(missing.values()), device=input_ids.device)
            with torch.no_grad():
                computed = compute(input_ids[rows], attention_mask[rows])
            self.rows.update(zip(missing, computed))
        return torch.stack([self.rows[k] for k in keys])


class HeadClassifier(nn.Module):
    """logits [B, K] = head(dropout(h)), h the last real token's final hidden state (pool
    "last"), or the mean of every real token's (pool "mean"); head: a Linear(dim, K) unless
    another module is given.  With a `cache` (a FeatureCache; the backbone must be frozen and in
    eval mode) h is computed once per sentence."""

    def __init__(self, backbone: nn.Module, dim: int, num_labels: int, dropout: float = 0.0,
                 pool: str = "last", head: Optional[nn.Module] = None, cache: Optional[FeatureCache] = None):
        super().__init__()
        if pool not in POOLS:
            raise MinillamaError(f"head pooling must be one of {', '.join(POOLS)}, got {pool!r}")
        if cache is not None and any(p.requires_grad for p in backbone.parameters()):
            raise ValueError("a feature cache needs a frozen backbone: trained, its features would change")
        self.backbone, self.pool, self.cache = backbone, pool, cache
        self.dropout = nn.Dropout(dropout)
        self.head = head if head is not None else nn.Linear(dim, num_labels)

    def backbone_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T], right-padded -> what the head reads [B, dim], computed"""
        # Left-padded, every row's last real token is the last position, and last_only
        # spares the last block's queries, feed-forward and head for all other positions.
        ids, mask = left_pad(input_ids, attention_mask)
        if self.pool == "mean":
            _, hidden = self.backbone(ids, mask)  # [B, T, dim]
            return mean_over_tokens(hidden, mask)
        _, hidden = self.backbone(ids, mask, last_only=True)  # [B, 1, dim]
        return hidden[:, -1]

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T], right-padded -> what the head reads [B, dim]
        (from the cache when there is one)."""
        if self.cache is None:
            return self.backbone_features(input_ids, attention_mask)
        if self.backbone.training:
            raise ValueError("a feature cache needs a backbone in eval mode: in train mode its dropout would vary")
        return self.cache.read(input_ids, attention_mask, self.backbone_features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T], right-padded -> logits [B, K]"""
        return self.head(self.dropout(self.features(input_ids, attention_mask)))


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


class RowReader(nn.Module):
    """Scores for rows that each have their own adapter and their own way to answer.

    multi: a backbone taking adapter=[name per row] (adapters/multi.MultiAdapter);
    readers[name] (name None: rows without an adapter): an nn.Linear head on the last
    hidden state, or on the mean of all real tokens' when pools[name] is "mean" (as
    HeadClassifier), or label names' token ids, scored as VerbalizerClassifier scores them.
    One pass reads every head and every single-token name (last_only unless a mean head
    needs every position); names of several tokens need the text followed by the name,
    which run as one more mixed batch of (row, name) pairs.  Every head reads every row
    (each row keeps its own head's scores), so every head's weights take part in each
    training step (a zero gradient where none of its rows is in the batch), as
    DistributedDataParallel needs; `dropout` acts on what the heads read
    (as HeadClassifier's)."""

    def __init__(self, multi: nn.Module, readers: Dict[str, Union[nn.Linear, Sequence[Sequence[int]]]],
                 pools: Optional[Dict[str, str]] = None, dropout: float = 0.0):
        super().__init__()
        self.multi = multi
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({k: v for k, v in readers.items() if isinstance(v, nn.Module)})
        self.mean_heads = {k for k, pool in (pools or {}).items() if pool == "mean" and k in self.heads}
        self.names = {k: [list(ids) for ids in v] for k, v in readers.items() if not isinstance(v, nn.Module)}
        if any(len(ids) == 0 for v in self.names.values() for ids in v):
            raise MinillamaError("a label name encodes to no tokens: use non-empty label names")

    def extra_positions(self, name: str) -> int:
        """Positions adapter `name`'s longest label name adds after the text."""
        return max(len(ids) for ids in self.names[name]) - 1 if name in self.names else 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, adapter: Sequence[str]) -> List[torch.Tensor]:
        """input_ids, attention_mask: [B, T], right-padded; adapter: a name per row ->
        per row its scores [K of that row's adapter]."""
        ids, mask = left_pad(input_ids, attention_mask)
        pooled = bool(self.mean_heads.intersection(adapter))
        logits, hidden = self.multi(ids, mask, adapter=adapter, last_only=not pooled)
        last = self.dropout(hidden[:, -1])  # [B, dim]
        means = self.dropout(mean_over_tokens(hidden, mask)) if pooled else last  # [B, dim]
        # every head on every row, in one [B, sum of K] tensor of which each row takes its own head's
        # columns: every head is then part of the loss (a zero gradient where none of its rows is)
        read = [head(means if name in self.mean_heads else last).float() for name, head in self.heads.items()]
        every = torch.cat(read, dim=1) if read else None
        starts = dict(zip(self.heads, itertools.accumulate([0] + [r.shape[1] for r in read])))
        next_logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # [B, vocab]
        scores, longer = [], []  # longer: (row, label, name tokens) of names with more than one token
        for b, name in enumerate(adapter):
            if name in self.heads:
                scores.append(every[b, starts[name]: starts[name] + self.heads[name].out_features])
                continue
            row = next_logp.new_zeros(len(self.names[name]))
            for k, label_ids in enumerate(self.names[name]):
                if len(label_ids) == 1:
                    row[k] = next_logp[b, label_ids[0]]
                else:
                    longer.append((b, k, label_ids))
            scores.append(row)
        for start in range(0, len(longer), len(adapter)):  # batches of B (row, name) pairs
            chunk = longer[start:start + len(adapter)]
            texts = [ids[b][mask[b].bool()].tolist() + label_ids[:-1] for b, _, label_ids in chunk]
            cids, cmask = pad_left(texts, pad_id=0)
            clogits, _ = self.multi(cids.to(ids.device), cmask.to(ids.device), adapter=[adapter[b] for b, _, _ in chunk])
            for c, (b, k, label_ids) in enumerate(chunk):
                L = len(label_ids)  # the last L positions predict the L name tokens
                logp = F.log_softmax(clogits[c, -L:].float(), dim=-1)
                scores[b][k] = logp.gather(1, torch.tensor(label_ids, device=logp.device)[:, None]).sum()
        return scores
