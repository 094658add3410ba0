"""SwiGLU for speed: `core.model.FeedForward` with its gate and up projections read by one
product after `fast.layout.use_decode_layout` fused their weights, and no dropout call in
eval mode (one module call per layer per generated token saved).  Proven equal in
tests/test_fast_layout.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.model import FeedForward
from .layout import fused_weight


class FastFeedForward(FeedForward):
    fused_projections = ("w1", "w3")  # may share one weight tensor (layout.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, dim] -> [B, T, dim]"""
        fused = fused_weight(self)  # [dim, 2 * hidden] after use_decode_layout, else None
        gate, up = (x @ fused).chunk(2, dim=-1) if fused is not None else (self.w1(x), self.w3(x))
        out = self.w2(F.silu(gate) * up)
        return self.dropout(out) if self.training else out
