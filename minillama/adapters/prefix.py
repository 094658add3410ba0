"""Deep prefixes: a frozen Llama steered by P trainable keys/values in every layer.

"ptuning2" (P-tuning v2, Liu et al. 2021): the prefix [L, 2, KV, P, hd] is the parameter.
"prefix"   (prefix tuning, Li & Liang 2021): the same prefix, trained through
           P = offset + MLP(P'), MLP = Linear(dim, hidden) -> tanh -> Linear(hidden,
           n_layers * 2 * kv_dim); `finalize()` folds it into a plain parameter.

Keys/values enter through the KV cache (`KVCache.from_prefix`): the model behaves as
if it had already read P tokens, so inputs sit at positions P, P+1, ..., padding masks
stay correct and prefix keys are never rotated.  Shapes: L layers, KV kv heads, hd
head_dim, P prefix length.  Where a prefix starts (random, vocab, text) is
adapters/prefix_init.py; prompt tuning (input embeddings only) is adapters/prompt.py.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..core.attention import KVCache
from .base import AdaptedModel
from .prefix_config import PrefixConfig
from .prefix_init import start_keys_values


class PTuningV2(AdaptedModel):
    """Deep prefix trained directly: `kv` [L, 2, KV, P, hd] is the parameter."""

    method = "ptuning2"
    mixes_per_row = True  # what a row reads lives in its own cache rows

    def __init__(self, base: nn.Module, cfg: PrefixConfig, tokenizer=None):
        super().__init__(base, cfg)
        cfg.check_fits(base.input_room)
        self.length = self.virtual_tokens = cfg.length
        self.build_encoder(start_keys_values(base, cfg, tokenizer))

    def build_encoder(self, start: torch.Tensor):
        """What trains, from the prefix [L, 2, KV, P, hd] the config starts at."""
        self.kv = nn.Parameter(start)

    def prefix_tensor(self) -> torch.Tensor:
        """The prefix as used: [L, 2, KV, P, hd]."""
        return self.kv

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        """A cache for `capacity` input tokens holding the prefix ([B, KV, P, hd] per layer)."""
        kv = self.prefix_tensor()
        expand = lambda t: t[None].expand(batch, -1, -1, -1)  # noqa: E731  [KV, P, hd] -> [B, KV, P, hd]
        return self.base.cache_type.from_prefix([expand(t[0]) for t in kv], [expand(t[1]) for t in kv], capacity + self.length)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        """input_ids, attention_mask: [B, T]; cache: from `new_cache` (decoding).
        Returns (logits [B, T, V], hidden [B, T, dim]) for the input positions."""
        if cache is None:
            # capacity 0: a one-shot cache (the prefix tensors, then this input's keys)
            cache = self.new_cache(input_ids.shape[0], 0)
        return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)

    def describe(self) -> str:
        mlp = f", reparameterized by a {self.cfg.hidden}-wide MLP" if hasattr(self.cfg, "hidden") else ""
        return f"prefix: mode {self.method}, length {self.length}{mlp}"

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        return {"prefix": self.prefix_tensor()}


class PrefixTuning(PTuningV2):
    """Deep prefix trained through P = offset + MLP(P'); `finalize()` folds it to `kv`."""

    method = "prefix"

    def build_encoder(self, start: torch.Tensor):
        c, w, hidden = self.base.config, self.base.tok_embeddings.weight, self.cfg.hidden
        self.prefix_embed = nn.Parameter(torch.randn(self.length, c.dim, dtype=w.dtype, device=w.device))  # P'
        self.mlp = nn.Sequential(nn.Linear(c.dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, c.n_layers * 2 * c.kv_dim)).to(w.device, w.dtype)
        if self.cfg.init == "random":
            self.register_buffer("offset", torch.zeros_like(start))
        else:
            # Start exactly at the text's keys/values.  The last Linear's bias is shared by
            # all P positions, so it cannot hold a per-position target; a frozen offset can.
            # Zeroing the last layer makes MLP(P') = 0 exactly at init; its weight still gets
            # gradient at once, and W1, P' from the next step on (like LoRA's B = 0).
            self.register_buffer("offset", start)
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def prefix_tensor(self) -> torch.Tensor:
        if not hasattr(self, "mlp"):  # finalized
            return self.kv
        c = self.base.config
        flat = self.mlp(self.prefix_embed)  # [P, L * 2 * KV * hd]
        deep = flat.view(self.length, c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
        return self.offset + deep

    @torch.no_grad()
    def finalize(self) -> "PrefixTuning":
        """After training: P = offset + MLP(P') replaced by its value, the plain parameter `kv`."""
        if hasattr(self, "mlp"):
            kv = self.prefix_tensor().detach().clone()
            del self.mlp, self.prefix_embed, self.offset
            self.kv = nn.Parameter(kv)
        return self

    def expected_tensors(self) -> Dict[str, torch.Tensor]:
        return {"prefix": self.finalize().kv}
