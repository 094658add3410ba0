"""A KV cache that reserves its buffers: the same contents as `core.attention.KVCache`,
written in place.

The plain cache concatenates each step's keys and values onto what it holds, copying
the whole history once per generated token.  This one reserves `capacity` positions
(doubling when they run out), so a step writes only its own keys; and beam search's
`reorder`, which usually moves few rows (most beams extend the beam in their own row),
copies only the rows that change.  Proven equal to the plain cache in
tests/test_fast_kv_cache.py.
"""
from __future__ import annotations

from typing import List

import torch

from ..core.attention import KVCache


class PreallocatedKVCache(KVCache):
    """KVCache with buffers reserved up front (`capacity`) and grown by doubling, so decoding
    writes each step's keys in place instead of concatenating; same contents as KVCache."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int,
                 capacity: int = 0, dtype=torch.float32, device="cpu"):
        super().__init__(n_layers, batch, n_kv_heads, head_dim, capacity, dtype, device)
        self.mask = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.concat_writes = False  # see from_prefix

    @classmethod
    def from_prefix(cls, keys: List[torch.Tensor], values: List[torch.Tensor], capacity: int = 0) -> "PreallocatedKVCache":
        """A cache holding given per-layer prefix keys/values, each [B, KV, P, hd].

        capacity > P (decoding): copied into buffers that later steps fill in place.
        capacity <= P (one training forward): the prefix tensors are kept as they are
        and the input's keys are concatenated once, so no zero-filled buffer is built
        and backward needs no copy-into-slice."""
        batch, n_kv, plen, hd = keys[0].shape
        cache = cls(len(keys), batch, n_kv, hd, max(capacity, plen), keys[0].dtype, keys[0].device)
        if capacity > plen:
            for layer, (k, v) in enumerate(zip(keys, values)):
                cache.write(layer, k, v, start=0)
        else:
            cache.keys, cache.values, cache.concat_writes = list(keys), list(values), True
        cache.mask[:, :plen] = True
        cache.length = plen
        return cache

    def _ensure_capacity(self, layer: int, needed: int, like: torch.Tensor):
        buf = self.keys[layer]
        cap = buf.shape[2] if buf is not None else self.capacity
        if buf is not None and needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        shape = (like.shape[0], like.shape[1], new_cap, like.shape[3])
        new_k = like.new_zeros(shape)
        new_v = like.new_zeros(shape)
        if buf is not None:
            new_k[:, :, :cap] = buf
            new_v[:, :, :cap] = self.values[layer]
        self.keys[layer], self.values[layer] = new_k, new_v

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        """Store k, v [B, KV, T, hd] at positions start..start+T-1; return the
        keys/values [B, KV, start+T, hd] visible to this step."""
        end = start + k.shape[2]
        if self.concat_writes and self.keys[layer].shape[2] == start:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
            return self.keys[layer], self.values[layer]
        self._ensure_capacity(layer, end, k)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def append_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Record the key mask [B, T] of T new tokens; return the mask [B, length+T]
        of every key they see.  Call once per forward, before the layers run."""
        end = self.length + new_mask.shape[1]
        if end > self.mask.shape[1]:
            grown = torch.zeros(self.batch, max(end, 2 * self.mask.shape[1]), dtype=torch.bool, device=self.mask.device)
            grown[:, : self.mask.shape[1]] = self.mask
            self.mask = grown
        self.mask[:, self.length:end] = new_mask.bool()
        return self.mask[:, :end]

    def reorder(self, index: torch.Tensor) -> "PreallocatedKVCache":
        """Make row r hold what row index[r] held (index [B']: rows may repeat or drop out),
        for keys, values and mask.  Beam search copies each prompt's row to its beams, then
        every step gives each beam the history of the beam it extends.

        Only the `length` keys written so far are copied, and the buffers keep their capacity.
        When the batch keeps its size and no row that changes is the source of another (as
        when a beam that extends its parent sits in its parent's row), only the changing rows
        are copied, in place; otherwise every row is, into new buffers."""
        index = index.to(self.mask.device)
        if len(index) == self.batch:
            dst = (index != torch.arange(len(index), device=index.device)).nonzero().squeeze(1)
            src = index[dst]
            if not bool(torch.isin(dst, src).any()):
                for store in (self.keys, self.values):
                    for buf in store:
                        if buf is not None and len(dst):
                            written = buf[:, :, : self.length]
                            written.index_copy_(0, dst, written.index_select(0, src))
                self.mask.index_copy_(0, dst, self.mask.index_select(0, src))
                return self
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                if old is not None:
                    new = old.new_empty((len(index),) + old.shape[1:])  # the unwritten tail is never read
                    torch.index_select(old[:, :, : self.length], 0, index, out=new[:, :, : self.length])
                    store[i] = new
        self.mask = self.mask.index_select(0, index)
        self.batch = len(index)
        return self

    def beam_rows(self, parent: torch.Tensor) -> torch.Tensor:
        return settle(parent)


def settle(parent: torch.Tensor) -> torch.Tensor:
    """Which new beam takes which of its prompt's k cache rows ("slots"): the first beam
    that extends beam p takes slot p, where p's history already is, so its row needs no
    copy; beams extending a parent already taken go to the slots of beams that ended
    their line.  parent [L, k] (new beams best first) -> order [L, k]: slot s gets new
    beam order[:, s].  (The order of a prompt's beams decides nothing but exact ties.)"""
    L, k = parent.shape
    j = torch.arange(k, device=parent.device)
    earlier_sibling = (parent[:, :, None] == parent[:, None, :]) & (j[None, :] < j[:, None])  # [L, k, k]
    first = ~earlier_sibling.any(dim=2)  # [L, k]: the first new beam on its parent
    taken = torch.zeros_like(first).scatter_(1, parent, True)  # [L, k]: slots whose line goes on
    free = torch.sort(taken.long(), dim=1, stable=True).indices  # the free slots first, in order
    slot = torch.where(first, parent, free.gather(1, ((~first).long().cumsum(dim=1) - 1).clamp(min=0)))
    return torch.empty_like(slot).scatter_(1, slot, j.expand(L, k))
