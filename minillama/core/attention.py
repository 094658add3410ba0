"""Multi-head attention with grouped-query heads, causal and padding masks,
and a key/value cache.

Shapes: B batch, T new tokens, S keys visible (cache + new), H query heads,
KV key/value heads (H % KV == 0, G = H // KV queries share one kv head), hd head_dim.

The cache (`KVCache`) is also how prefixes enter the model: prefix tuning
hands every layer a pre-filled cache of trainable keys/values, exactly as if the
model had already read `prefix_length` tokens.  Keys are stored *after* RoPE,
so cached or prefix keys are never rotated again.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import LlamaConfig, Runtime
from .rope import apply_rope


class KVCache:
    """Per-layer keys/values [B, KV, S, hd] plus a key mask [B, S] (True = real token).

    Each forward appends its tokens' keys and values, so the cache always holds
    exactly the `length` keys read so far.  Appending is autograd-friendly: a cache
    that starts from trainable prefix tensors back-propagates into them.
    (`minillama.fast.kv_cache` keeps preallocated buffers instead: same contents.)"""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int,
                 capacity: int = 0, dtype=torch.float32, device="cpu"):
        self.n_layers, self.batch = n_layers, batch
        self.capacity = capacity  # how many keys the caller expects (a hint: only the fast cache reserves them)
        self.keys: List[Optional[torch.Tensor]] = [None] * n_layers
        self.values: List[Optional[torch.Tensor]] = [None] * n_layers
        self.mask = torch.zeros(batch, 0, dtype=torch.bool, device=device)
        self.dtype, self.device = dtype, device
        self.length = 0  # keys stored and visible so far (same for every layer)

    @classmethod
    def from_prefix(cls, keys: List[torch.Tensor], values: List[torch.Tensor], capacity: int = 0) -> "KVCache":
        """A cache holding given per-layer prefix keys/values, each [B, KV, P, hd]:
        the model then behaves as if it had already read P tokens."""
        batch, n_kv, plen, hd = keys[0].shape
        cache = cls(len(keys), batch, n_kv, hd, max(capacity, plen), keys[0].dtype, keys[0].device)
        for layer, (k, v) in enumerate(zip(keys, values)):
            cache.write(layer, k, v, start=0)
        cache.mask = torch.ones(batch, plen, dtype=torch.bool, device=keys[0].device)
        cache.length = plen
        return cache

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int):
        """Store k, v [B, KV, T, hd] at positions start..start+T-1; return the
        keys/values [B, KV, start+T, hd] visible to this step."""
        if self.keys[layer] is None or start == 0:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = torch.cat([self.keys[layer][:, :, :start], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer][:, :, :start], v], dim=2)
        return self.keys[layer], self.values[layer]

    def append_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Record the key mask [B, T] of T new tokens; return the mask [B, length+T]
        of every key they see.  Call once per forward, before the layers run."""
        self.mask = torch.cat([self.mask[:, : self.length], new_mask.bool()], dim=1)
        return self.mask

    def reorder(self, index: torch.Tensor) -> "KVCache":
        """Make row r hold what row index[r] held (index [B']: rows may repeat or drop out),
        for keys, values and mask.  Beam search copies each prompt's row to its beams, then
        every step gives each beam the history of the beam it extends."""
        index = index.to(self.mask.device)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                if old is not None:
                    store[i] = old[:, :, : self.length].index_select(0, index)
        self.mask = self.mask[:, : self.length].index_select(0, index)
        self.batch = len(index)
        return self

    def beam_rows(self, parent: torch.Tensor) -> torch.Tensor:
        """Which of its prompt's k rows each new beam takes: parent [L, k] (the beam each extends,
        best first) -> order [L, k], row s gets beam order[:, s].  Rank order (ties aside, any would do)."""
        return torch.arange(parent.shape[1], device=parent.device).expand_as(parent)


def attention_bias(key_mask: torch.Tensor, n_new: int, dtype) -> torch.Tensor:
    """Additive mask [B, 1, 1, T, S]: 0 where query t may see key s, else a large
    negative number.  Query t sits at key index S - T + t and sees every earlier
    real key (causal + padding).  A padding query also sees itself, so no row is
    empty: with left padding (whose first queries see no real key) an empty row
    would turn into NaN in a bf16/fp16 softmax and spread.  Nothing reads the
    outputs of padding queries."""
    S = key_mask.shape[1]
    q_index = torch.arange(S - n_new, S, device=key_mask.device)[:, None]  # [T, 1]
    k_index = torch.arange(S, device=key_mask.device)[None, :]  # [1, S]
    allowed = ((k_index <= q_index)[None] & key_mask[:, None, :]) | (k_index == q_index)[None]  # [B, T, S]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None, None]


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, runtime: Runtime = Runtime()):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.n_groups = self.n_heads // self.n_kv_heads
        self.wq = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.dim, bias=False)
        self.dropout = runtime.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                cache: Optional[KVCache] = None, layer: int = 0, last_only: bool = False) -> torch.Tensor:
        """x: [B, T, dim]; cos/sin: [B, T, hd/2] at each token's position;
        bias: [B, 1, 1, T, S] from `attention_bias`; cache: keys before these T
        tokens (S = cache.length + T), updated in place.  Returns [B, T, dim],
        or [B, 1, dim] when last_only: every token still gives its key and value,
        but only the last one asks a query (nothing reads the others' outputs)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, last_only)
        Tq = q.shape[1]  # queries: T, or 1 when last_only
        q = q.view(B, Tq, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos[:, -Tq:], sin[:, -Tq:]), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T or Tq, hd]
        if cache is not None:
            k, v = cache.write(layer, k, v, start=cache.length)  # [B, KV, S, hd]
        out = self.attend(q, k, v, bias[..., -Tq:, :])  # bias: the queries' rows
        return self.wo(out.transpose(1, 2).reshape(B, Tq, -1))

    def project(self, x: torch.Tensor, last_only: bool = False):
        """The queries [B, Tq, H*hd] (Tq = 1 when last_only), keys and values [B, T, KV*hd]."""
        return self.wq(x[:, -1:] if last_only else x), self.wk(x), self.wv(x)

    def attend(self, q, k, v, bias):
        """softmax(q k^T / sqrt(hd) + bias) v, written out.  Grouped-query heads
        without copying k/v: the G query heads of a group share one kv head.
        q: [B, H, T, hd], k/v: [B, KV, S, hd], bias: [B, 1, 1, T, S] -> [B, H, T, hd]"""
        B, H, T, hd = q.shape
        # Scale the queries [.., T, hd], not the scores [.., T, S]: the scores are the
        # largest tensors in the model, so each pass over them counts.
        q = q.reshape(B, self.n_kv_heads, self.n_groups, T, hd) * (1.0 / math.sqrt(hd))
        scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float()  # [B, KV, G, T, S]
        scores += bias  # in place: backward needs q and k, not the product
        probs = torch.softmax(scores, dim=-1).type_as(q)
        if self.training and self.dropout > 0:
            probs = F.dropout(probs, p=self.dropout)
        out = torch.matmul(probs, v.unsqueeze(2))  # [B, KV, G, T, hd]
        return out.reshape(B, H, T, hd)
