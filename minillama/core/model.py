"""The Llama transformer: embeddings -> n_layers x (norm, attention, norm, SwiGLU) -> norm -> logits.

    h = x + Attention(norm(x))      # pre-norm residual blocks
    out = h + FeedForward(norm(h))

`Llama.forward(input_ids, attention_mask)` returns `(logits, hidden_states)`
for every position: [B, T, vocab] and [B, T, dim] (after the final norm).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVCache, attention_bias
from .config import LlamaConfig, Runtime
from ..errors import MinillamaError
from .norms import make_norm
from .rope import precompute_rope_table


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x).  w1 is the gate, w3 the up, w2 the down projection."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, dim] -> [B, T, dim]"""
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, config: LlamaConfig, runtime: Runtime):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(config, runtime)
        self.feed_forward = FeedForward(config.dim, config.hidden_dim, runtime.dropout)
        self.attention_norm = make_norm(config.norm, config.dim, config.norm_eps)
        self.ffn_norm = make_norm(config.norm, config.dim, config.norm_eps)
        self.resid_dropout = nn.Dropout(runtime.dropout)

    def forward(self, x, cos, sin, bias, cache=None, last_only: bool = False):
        """x: [B, T, dim] -> [B, T, dim], or [B, 1, dim] (the last position) when last_only"""
        attn = self.attention(self.attention_norm(x), cos, sin, bias, cache, self.layer_id, last_only)
        x = x[:, -1:] if last_only else x
        h = x + self.resid_dropout(attn)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    """config: the architecture; runtime: how it runs (dropout)."""

    cache_type = KVCache  # what new_cache builds (minillama.fast swaps in a preallocating one)

    def __init__(self, config: LlamaConfig, runtime: Optional[Runtime] = None):
        super().__init__()
        self.config = config
        self.runtime = runtime = runtime or Runtime()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(runtime.dropout)
        self.layers = nn.ModuleList(TransformerBlock(i, config, runtime) for i in range(config.n_layers))
        self.norm = make_norm(config.norm, config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._rope_cache = {}
        for module in self.modules():  # a fresh model: every weight N(0, 0.02) (checkpoints replace them)
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- positions -------------------------------------------------------------
    def rope_table(self, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [max_seq_len, hd/2] in float32, built once per device.  Kept
        out of the state dict and out of .to(dtype), so bf16 models rotate exactly."""
        key = str(device)
        if key not in self._rope_cache:
            c = self.config
            cos, sin = precompute_rope_table(c.head_dim, c.max_seq_len, c.rope_theta, c.rope_scaling)
            self._rope_cache[key] = (cos.to(device), sin.to(device))
        return self._rope_cache[key]

    def _positions(self, key_mask: torch.Tensor, n_new: int) -> torch.Tensor:
        """Position of each new token = number of real keys before it: [B, T].
        Left padding and prefixes (a cache of P keys) shift positions correctly."""
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, -n_new:]
        if positions.numel() and int(positions.max()) >= self.config.max_seq_len:
            raise MinillamaError(
                f"sequence of {int(positions.max()) + 1} tokens exceeds the model's max_seq_len "
                f"{self.config.max_seq_len}: shorten the input (e.g. --max_sentence_len) or --max_new_tokens")
        return positions

    # -- forward ---------------------------------------------------------------
    @property
    def input_room(self) -> int:
        """Positions left for input tokens (an adapter that reads virtual tokens first has fewer)."""
        return self.config.max_seq_len

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        """An empty KV cache for incremental decoding (adapters may pre-fill it)."""
        p = next(self.parameters())
        c = self.config
        return self.cache_type(c.n_layers, batch, c.n_kv_heads, c.head_dim, capacity, p.dtype, p.device)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] ids -> [B, T, dim] embeddings."""
        return self.tok_embeddings(input_ids)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None, *,
                inputs_embeds: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                last_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """input_ids: [B, T] (or inputs_embeds [B, T, dim]); attention_mask: [B, T],
        1 for real tokens, 0 for padding (left or right); cache: keys of earlier
        tokens (or a prefix), extended in place.

        Returns (logits, hidden_states): [B, T, vocab] and [B, T, dim] after the
        final norm.  last_only: [B, 1, vocab] and [B, 1, dim] for the last position
        only (left-pad ragged rows so it is every row's last token); the last block
        then computes its queries, feed-forward and the head for that position alone.
        Generation, classification heads and answer scoring read nothing else."""
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        key_mask = attention_mask.bool() if cache is None else cache.append_mask(attention_mask)
        positions = self._positions(key_mask, T)
        cos_table, sin_table = self.rope_table(x.device)
        cos, sin = cos_table[positions], sin_table[positions]  # [B, T, hd/2]
        bias = attention_bias(key_mask, T, x.dtype if x.is_floating_point() else torch.float32)

        h = self.dropout(x)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, bias, cache, last_only=last_only and i == len(self.layers) - 1)
        if cache is not None:
            cache.length += T
        h = self.norm(h[:, -1:] if last_only else h)  # (n_layers 0: the embeddings' last position)
        return self.output(h), h

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Continue input_ids [B, T] by up to max_new_tokens: [B, T + new].  The settings
        (temperature, epsilon, eos_id, attention_mask, beam_size, ...) are sampling.generate's."""
        from .sampling import generate
        return generate(self, input_ids, max_new_tokens, **kwargs)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Distinct parameters (a tied output counts once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
