"""A different adapter per row: one batch whose rows each read their own deep prefix.

A deep prefix (prefix tuning, P-tuning v2: adapters/prefix.py) is nothing but keys and
values in the KV cache, and the cache is per row, so the rows of one batch can read
different prefixes, or none, from adapters of one base.  (PEFT mixes adapters within a
batch for LoRA only.)  Prefixes shorter than the batch's longest, and rows without one,
are padded with masked keys: the cache's key mask hides them from attention, and since a
token's position is the number of real keys before it (Llama._positions), every row's
input sits exactly where it sits when the row runs alone with its adapter.

    multi = MultiAdapter(base, {"sst": a, "imdb": b})
    logits, hidden = multi(ids, mask, adapter=["sst", "imdb", None])   # None: the base alone
    multi.generate(ids, 20, adapter=["sst", "imdb", None], attention_mask=mask)
    rows = multi.rows(["sst", "imdb", None])   # that assignment as a plain backbone

`TaskPrefixes` is the same per-row reading with prefixes that train: one per task, each
optionally behind N positions every task shares (tasks/multitask.py trains them in one run).

Shapes: A adapters, L layers, KV kv heads, hd head_dim, P_a adapter a's prefix length,
P the longest in the batch, B rows.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import KVCache
from ..errors import MinillamaError
from .base import AdaptedModel
from .identity import base_identity
from .prefix_config import PrefixConfig
from .registry import METHODS, attach


def prefix_bank(prefixes: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Prefixes [L, 2, KV, P_a, hd] stacked behind an entry 0 of none, shorter ones padded:
    (bank [A + 1, L, 2, KV, P_max, hd], bank_mask [A + 1, P_max] marking the real slots).
    Differentiable in the prefixes (a trained prefix's gradient flows back through it)."""
    longest = max(p.shape[3] for p in prefixes)
    padded = [F.pad(p, (0, 0, 0, longest - p.shape[3])) for p in prefixes]
    bank = torch.stack([torch.zeros_like(padded[0])] + padded)
    mask = torch.zeros(len(prefixes) + 1, longest, dtype=torch.bool, device=bank.device)
    for i, p in enumerate(prefixes, start=1):
        mask[i, : p.shape[3]] = True
    return bank, mask


class PerRow(nn.Module):
    """What both kinds of per-row prefixes share: names -> bank entries, and the backbone of
    one assignment of rows.  A subclass sets `base`, `config`, `names`, `lengths` ([0] + P_a
    per name) and gives `bank_and_mask()` (as `prefix_bank` returns them)."""

    def index(self, adapter: Sequence[Optional[str]]) -> torch.Tensor:
        """Row -> bank entry: [B] (0 for None)."""
        unknown = [a for a in adapter if a is not None and a not in self.names]
        if unknown:
            raise MinillamaError(f"unknown adapter name {unknown[0]!r}: this batch knows {', '.join(self.names)}")
        return torch.tensor([0 if a is None else self.names.index(a) + 1 for a in adapter])

    def rows(self, adapter: Sequence[Optional[str]]) -> "RowPrefixes":
        """A backbone for batches whose row b reads adapter[b]'s prefix (None: none)."""
        idx = self.index(adapter)
        P = max(self.lengths[i] for i in idx.tolist())  # this batch's longest prefix
        bank, mask = self.bank_and_mask()
        idx = idx.to(bank.device)
        return RowPrefixes(self.base, bank[idx, ..., :P, :], mask[idx, :P])

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, adapter: Sequence[Optional[str]],
                cache=None, last_only: bool = False):
        """input_ids, attention_mask [B, T]; adapter: a name (or None) per row; cache: from
        rows(adapter).new_cache.  -> (logits [B, T, V], hidden [B, T, dim]) as the base."""
        return self.rows(adapter)(input_ids, attention_mask, cache=cache, last_only=last_only)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, adapter: Sequence[Optional[str]], **kwargs):
        """As Llama.generate, row b continued under adapter[b]."""
        return self.rows(adapter).generate(input_ids, max_new_tokens, **kwargs)


class MultiAdapter(PerRow):
    """Frozen deep-prefix adapters of one base, stacked so each row can pick its own.

    bank [A + 1, L, 2, KV, P_max, hd]: entry 0 is "no adapter" (all keys masked), entry i
    adapter i's prefix in slots 0..P_i - 1; bank_mask [A + 1, P_max] marks the real slots."""

    def __init__(self, base: nn.Module, adapters: Dict[str, AdaptedModel]):
        super().__init__()
        if not adapters:
            raise MinillamaError("a multi-adapter batch needs at least one adapter")
        identity = base_identity(base)
        for name, adapter in adapters.items():
            if not adapter.mixes_per_row:
                raise MinillamaError(f"adapter {name!r} is {adapter.method}: rows mix deep prefixes only "
                                     f"(prefix, ptuning2), whose keys and values are per row")
            if adapter.base is not base and base_identity(adapter.base) != identity:
                raise MinillamaError(f"adapter {name!r} was attached to another base model: mix adapters of one base")
        self.base, self.config = base.requires_grad_(False), base.config
        self.names = list(adapters)
        prefixes = [adapters[n].prefix_tensor().detach() for n in self.names]  # each [L, 2, KV, P_a, hd]
        self.lengths = [0] + [p.shape[3] for p in prefixes]
        bank, mask = prefix_bank(prefixes)
        self.register_buffer("bank", bank, persistent=False)
        self.register_buffer("bank_mask", mask, persistent=False)

    def bank_and_mask(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.bank, self.bank_mask


class TaskPrefixes(PerRow):
    """One trainable deep prefix per task, trained together: row b reads its task's prefix,
    [shared N | the task's own P] positions, the N shared ones a single prefix every task's
    rows train (N = 0: none).  `cfg` (P-tuning v2 or prefix tuning, adapters/prefix.py) is
    each task's own part; the shared part is the same method, `shared_length` long.  Every
    forward builds the whole bank from the live prefixes, so every task's prefix (and its MLP)
    takes part in every step, with zero gradient where no row of its task is in the batch.

        prefixes = TaskPrefixes(base, PrefixConfig(length=20), ["sst", "cfimdb"], shared_length=10)
        logits, hidden = prefixes(ids, mask, adapter=["sst", "cfimdb", "sst"])
        alone = prefixes.task_adapter("sst")   # a plain adapter of 30 positions: the same rows"""

    def __init__(self, base: nn.Module, cfg: PrefixConfig, names: Sequence[str], shared_length: int = 0,
                 tokenizer=None):
        super().__init__()
        if not names:
            raise MinillamaError("one prefix per task needs at least one task")
        if not METHODS[cfg.method].mixes_per_row:
            raise MinillamaError(f"one prefix per task mixes deep prefixes (ptuning2, prefix) in a batch, not "
                                 f"{cfg.method}")
        if not cfg.length + shared_length < base.input_room:
            raise MinillamaError(f"--shared_prefix_length {shared_length} + --prefix_length {cfg.length} virtual "
                                 f"tokens must stay below the model's context of {base.input_room}: shorten them")
        self.base, self.config, self.tokenizer = base.requires_grad_(False), base.config, tokenizer
        self.names, self.shared_length = list(names), shared_length
        self.shared = attach(base, replace(cfg, length=shared_length), tokenizer) if shared_length else None
        self.tasks = nn.ModuleDict({name: attach(base, cfg, tokenizer) for name in self.names})
        self.lengths = [0] + [shared_length + cfg.length] * len(self.names)

    def task_prefix(self, name: str) -> torch.Tensor:
        """Task `name`'s prefix as its rows read it: [L, 2, KV, N + P, hd]."""
        own = self.tasks[name].prefix_tensor()
        return own if self.shared is None else torch.cat([self.shared.prefix_tensor(), own], dim=3)

    def bank_and_mask(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return prefix_bank([self.task_prefix(name) for name in self.names])

    def finalize(self) -> "TaskPrefixes":
        """After training: prefix tuning's MLPs folded into plain prefixes."""
        for part in [self.shared, *self.tasks.values()]:
            if part is not None:
                part.finalize()
        return self

    def task_adapter(self, name: str) -> AdaptedModel:
        """Task `name` alone: a finalized adapter of its method, N + P positions long, holding the
        shared positions then its own (what its adapter file holds, loadable by io.load_adapter)."""
        own = self.tasks[name]
        alone = type(own)(self.base, replace(own.cfg, length=self.lengths[1]), self.tokenizer).finalize()
        alone.load_adapter_tensors({"prefix": self.task_prefix(name).detach()})
        return alone.requires_grad_(False)


class RowPrefixes(AdaptedModel):
    """One assignment of prefixes to rows: a drop-in backbone (forward, new_cache, input_room,
    generate) for batches of exactly B rows.  kv [B, L, 2, KV, P, hd], key_mask [B, P]."""

    method = "multi"

    def __init__(self, base: nn.Module, kv: torch.Tensor, key_mask: torch.Tensor):
        super().__init__(base, None)
        self.kv, self.key_mask = kv, key_mask
        self.virtual_tokens = kv.shape[4]  # the context the longest prefix takes from the batch

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        """A cache for `capacity` input tokens holding every row's prefix, masked where shorter."""
        if batch != self.kv.shape[0]:
            raise MinillamaError(f"this multi-adapter backbone has {self.kv.shape[0]} rows, got a batch of {batch}")
        if self.virtual_tokens == 0:
            return self.base.new_cache(batch, capacity)
        layers = range(self.kv.shape[1])
        cache = self.base.cache_type.from_prefix([self.kv[:, i, 0] for i in layers], [self.kv[:, i, 1] for i in layers],
                                    capacity + self.virtual_tokens)
        cache.mask[:, : self.virtual_tokens] = self.key_mask
        return cache

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        if cache is None and self.virtual_tokens:
            cache = self.new_cache(input_ids.shape[0], 0)  # one-shot, as PTuningV2.forward
        return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)

    def adapter_tensors(self):
        raise MinillamaError("a multi-adapter batch is not one adapter: save each adapter on its own")
