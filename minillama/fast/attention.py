"""Attention for speed: the same function as `core.attention.Attention`, computed faster.

Three changes, each proven equal to the plain module in tests/test_fast_attention.py:

1. Fused projections.  After `fast.layout.use_decode_layout`, q, k and v are read by one
   product with their side-by-side weight (see layout.py); otherwise by their layers.
2. Causal query blocks.  Query t sits at key index S - T + t and sees no key after it,
   so a block of queries ending before t = end needs no score right of S - T + end: those
   are masked anyway.  Attending `query_block` queries at a time and scoring only the keys
   each block can see computes 5/8 of the [T, S] scores at T = S = 512 in blocks of 128,
   and the saved probabilities shrink alike.  Same result, since every skipped key had
   probability 0.
3. `sdpa=True`, opt-in (`--use_sdpa`; off by default, refused with `--no_fast`): torch's
   fused `scaled_dot_product_attention` in place of the written-out softmax (kv heads
   repeated for grouped-query attention), equal in values and gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.attention import Attention
from .layout import fused_weight


class FastAttention(Attention):
    fused_projections = ("wq", "wk", "wv")  # may share one weight tensor (layout.py)
    query_block = 128  # queries per causal block
    sdpa = False       # set per module by fast.speed_up

    def project(self, x: torch.Tensor, last_only: bool = False):
        fused = fused_weight(self)  # [dim, q + k + v] after use_decode_layout, else None
        if fused is None:
            return super().project(x, last_only)
        q, k, v = (x @ fused).split([self.wq.out_features, self.wk.out_features, self.wv.out_features], dim=-1)
        return (q[:, -1:] if last_only else q), k, v

    def attend(self, q, k, v, bias):
        """As Attention.attend, `query_block` queries at a time, each block scoring only
        the keys it can see.  q: [B, H, T, hd], k/v: [B, KV, S, hd], bias: [B, 1, 1, T, S]"""
        attend = self._sdpa if self.sdpa else super().attend
        T, S = q.shape[2], k.shape[2]
        if T <= self.query_block:  # decoding, short inputs
            return attend(q, k, v, bias)
        blocks = []
        for start in range(0, T, self.query_block):
            end = min(start + self.query_block, T)
            seen = S - T + end  # keys visible to the block's last query
            blocks.append(attend(q[:, :, start:end], k[:, :, :seen], v[:, :, :seen], bias[..., start:end, :seen]))
        return torch.cat(blocks, dim=2)

    def _sdpa(self, q, k, v, bias):
        """torch's fused kernel, kv heads repeated."""
        k = k.repeat_interleave(self.n_groups, dim=1)
        v = v.repeat_interleave(self.n_groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, 0].to(q.dtype),
                                              dropout_p=self.dropout if self.training else 0.0)
