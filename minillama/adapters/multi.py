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

Shapes: A adapters, L layers, KV kv heads, hd head_dim, P_a adapter a's prefix length,
P the longest in the batch, B rows.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..core.attention import KVCache
from ..errors import MinillamaError
from .base import AdaptedModel
from .identity import base_identity



class MultiAdapter(nn.Module):
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
        longest = max(self.lengths)
        bank = prefixes[0].new_zeros((len(prefixes) + 1,) + prefixes[0].shape[:3] + (longest, prefixes[0].shape[4]))
        mask = torch.zeros(len(prefixes) + 1, longest, dtype=torch.bool, device=bank.device)
        for i, p in enumerate(prefixes, start=1):
            bank[i, :, :, :, : p.shape[3]] = p
            mask[i, : p.shape[3]] = True
        self.register_buffer("bank", bank, persistent=False)
        self.register_buffer("bank_mask", mask, persistent=False)

    def index(self, adapter: Sequence[Optional[str]]) -> torch.Tensor:
        """Row -> bank entry: [B] (0 for None)."""
        unknown = [a for a in adapter if a is not None and a not in self.names]
        if unknown:
            raise MinillamaError(f"unknown adapter name {unknown[0]!r}: this batch knows {', '.join(self.names)}")
        return torch.tensor([0 if a is None else self.names.index(a) + 1 for a in adapter], device=self.bank.device)

    def rows(self, adapter: Sequence[Optional[str]]) -> "RowPrefixes":
        """A backbone for batches whose row b reads adapter[b]'s prefix (None: none)."""
        idx = self.index(adapter)
        P = max(self.lengths[i] for i in idx.tolist())  # this batch's longest prefix
        return RowPrefixes(self.base, self.bank[idx, ..., :P, :], self.bank_mask[idx, :P])

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, adapter: Sequence[Optional[str]],
                cache=None, last_only: bool = False):
        """input_ids, attention_mask [B, T]; adapter: a name (or None) per row; cache: from
        rows(adapter).new_cache.  -> (logits [B, T, V], hidden [B, T, dim]) as the base."""
        return self.rows(adapter)(input_ids, attention_mask, cache=cache, last_only=last_only)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, adapter: Sequence[Optional[str]], **kwargs):
        """As Llama.generate, row b continued under adapter[b]."""
        return self.rows(adapter).generate(input_ids, max_new_tokens, **kwargs)


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
