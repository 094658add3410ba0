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
from ..fast.layout import fused_weight
from .rope import apply_rope


class KVCache:
    """Per-layer keys/values [B, KV, S, hd] plus a key mask [B, S] (True = real token).

    Buffers grow by doubling, so decoding writes in place instead of
    concatenating every step.  Writes are autograd-friendly, so a cache built
    from trainable prefix tensors back-propagates into them."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int,
                 capacity: int = 0, dtype=torch.float32, device="cpu"):
        self.n_layers, self.batch = n_layers, batch
        self.shape = (batch, n_kv_heads, capacity, head_dim)
        self.keys: List[Optional[torch.Tensor]] = [None] * n_layers
        self.values: List[Optional[torch.Tensor]] = [None] * n_layers
        self.mask = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.dtype, self.device = dtype, device
        self.length = 0  # keys stored and visible so far (same for every layer)
        self.concat_writes = False  # see from_prefix

    @classmethod
    def from_prefix(cls, keys: List[torch.Tensor], values: List[torch.Tensor], capacity: int = 0) -> "KVCache":
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
        cap = buf.shape[2] if buf is not None else self.shape[2]
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

    def reorder(self, index: torch.Tensor) -> "KVCache":
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
        self.shape = (self.batch,) + self.shape[1:]
        return self

    def expand_batch(self, batch: int) -> "KVCache":
        """A batch-`batch` view of a batch-1 cache (prefixes shared by every example)."""
        out = KVCache(self.n_layers, batch, self.shape[1], self.shape[3], 0, self.dtype, self.device)
        for i in range(self.n_layers):
            k, v = self.keys[i][:, :, : self.length], self.values[i][:, :, : self.length]
            out.write(i, k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), 0)
        out.mask = self.mask[:, : self.length].expand(batch, -1).clone()
        out.length = self.length
        return out


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
    fused_projections = ("wq", "wk", "wv")  # may share one weight tensor (layout.py)
    query_block = 128  # queries per causal attention block (_attend_in_blocks); fastest of 32..512 at T=512 on CPU

    def __init__(self, config: LlamaConfig, runtime: Runtime = Runtime()):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.n_groups = self.n_heads // self.n_kv_heads
        self.wq = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.dim, bias=False)
        self.dropout = runtime.dropout
        self.use_sdpa = runtime.use_sdpa

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                cache: Optional[KVCache] = None, layer: int = 0, last_only: bool = False) -> torch.Tensor:
        """x: [B, T, dim]; cos/sin: [B, T, hd/2] at each token's position;
        bias: [B, 1, 1, T, S] from `attention_bias`; cache: keys before these T
        tokens (S = cache.length + T), updated in place.  Returns [B, T, dim],
        or [B, 1, dim] when last_only: every token still gives its key and value,
        but only the last one asks a query (nothing reads the others' outputs)."""
        B, T, _ = x.shape
        fused = fused_weight(self)  # [dim, q + k + v] after use_decode_layout, else None
        if fused is not None:
            q, k, v = (x @ fused).split([self.wq.out_features, self.wk.out_features, self.wv.out_features], dim=-1)
            q = q[:, -1:] if last_only else q
        else:
            q, k, v = self.wq(x[:, -1:] if last_only else x), self.wk(x), self.wv(x)
        Tq = q.shape[1]  # queries: T, or 1 when last_only
        q = q.view(B, Tq, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos[:, -Tq:], sin[:, -Tq:]), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T or Tq, hd]
        if cache is not None:
            k, v = cache.write(layer, k, v, start=cache.length)  # [B, KV, S, hd]
        out = self._attend_in_blocks(q, k, v, bias[..., -Tq:, :])  # bias: the queries' rows
        return self.wo(out.transpose(1, 2).reshape(B, Tq, -1))

    def _attend_in_blocks(self, q, k, v, bias):
        """Causal attention, `query_block` queries at a time, each block scoring only the
        keys it can see.  Query t sits at key index S - T + t, so a block of queries ending
        before t = end sees no key at or after S - T + end: the scores right of that are
        masked anyway, and skipping them skips their work.  At T = S = 512 in blocks of 128
        this computes 5/8 of the [T, S] scores (a layer's attention forward+backward takes
        half the time on CPU, and the saved probabilities shrink alike).  Same result as
        one block, since every skipped key had probability 0.
        q: [B, H, T, hd], k/v: [B, KV, S, hd], bias: [B, 1, 1, T, S] -> [B, H, T, hd]"""
        attend = self._sdpa if self.use_sdpa else self._attend
        T, S = q.shape[2], k.shape[2]
        if T <= self.query_block:  # decoding, short inputs
            return attend(q, k, v, bias)
        blocks = []
        for start in range(0, T, self.query_block):
            end = min(start + self.query_block, T)
            seen = S - T + end  # keys visible to the block's last query
            blocks.append(attend(q[:, :, start:end], k[:, :, :seen], v[:, :, :seen], bias[..., start:end, :seen]))
        return torch.cat(blocks, dim=2)

    def _attend(self, q, k, v, bias):
        """softmax(q k^T / sqrt(hd) + bias) v, written out.  Grouped-query heads
        without copying k/v: the G query heads of a group share one kv head.
        q: [B, H, T, hd], k/v: [B, KV, S, hd] -> [B, H, T, hd]"""
        B, H, T, hd = q.shape
        # Scale the queries [.., T, hd], not the scores [.., T, S]: at 512 tokens the
        # scores are the largest tensors in the model, so each pass over them counts.
        q = q.reshape(B, self.n_kv_heads, self.n_groups, T, hd) * (1.0 / math.sqrt(hd))
        scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)).float()  # [B, KV, G, T, S]
        scores += bias  # in place: backward needs q and k, not the product
        probs = torch.softmax(scores, dim=-1).type_as(q)
        if self.training and self.dropout > 0:
            probs = F.dropout(probs, p=self.dropout)
        out = torch.matmul(probs, v.unsqueeze(2))  # [B, KV, G, T, hd]
        return out.reshape(B, H, T, hd)

    def _sdpa(self, q, k, v, bias):
        """Opt-in fast path (Runtime.use_sdpa): torch's fused kernel, kv heads repeated."""
        k = k.repeat_interleave(self.n_groups, dim=1)
        v = v.repeat_interleave(self.n_groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, 0].to(q.dtype),
                                              dropout_p=self.dropout if self.training else 0.0)
