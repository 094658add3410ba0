"""LLaMA-Adapter (Zhang et al. 2023): a gated adaption prompt in the top layers.

In each of the top `layers` blocks, a trainable adaption prompt A [P, dim] and a gate g
(zero at the start).  The block's own attention runs unchanged; beside it, its queries q
(rotated, as the block rotates them) also read the prompt, in a softmax of their own:

    K_A = A Wk^T,  V_A = A Wv^T                [P, KV * hd]  the block's frozen projections
    out = Attention(x) + Wo (g * softmax(q K_A^T / sqrt(hd)) V_A)

- the prompt keys are never rotated: the prompt has no position, every query sees all P;
- the separate softmax leaves the block's own attention weights exactly as they were;
- g = 0 at init, so the model starts as the base exactly (bit for bit), and g learns how
  much of the prompt each layer lets in ("zero-init attention").

These are Hugging Face PEFT's `AdaptionPromptConfig` semantics (one gate per layer, used
as is, prompt drawn from a standard normal), so PEFT's adapters convert exactly
(adapters/llama_adapter_peft.py).  `gate="tanh"` is the paper's variant instead: one gate
per head, used as tanh(g).  The prompt takes no positions: `input_room` is the base's, and
the KV cache holds the real tokens only.  The base is never modified: the adapted blocks
are copies sharing its tensors (adapters/sharing.py).
Shapes: B batch, T tokens (Tq queries: T, or 1 with last_only), H heads, KV kv heads
(G = H / KV queries per kv head), hd head_dim, P prompt length.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict

import torch
from torch import nn

from ..core.rope import apply_rope
from .base import AdaptedModel
from .llama_adapter_config import LlamaAdapterConfig
from .sharing import sharing_copy



class PromptedAttention(nn.Module):
    """A block's frozen `Attention` plus its adaption prompt and gate (see the module doc).
    Called exactly as the Attention is; the wrapped module is used, never changed."""

    def __init__(self, attention: nn.Module, length: int, gate: str = "scalar"):
        super().__init__()
        self.attention, self.gate_kind = attention, gate
        w = attention.wq.weight
        # PEFT (and the official code, an nn.Embedding) start the prompt at N(0, 1): the scale of
        # the normed hidden states the block's wk/wv read.
        self.prompt = nn.Parameter(torch.randn(length, attention.wk.in_features, dtype=w.dtype, device=w.device))
        self.gate = nn.Parameter(torch.zeros(attention.n_heads if gate == "tanh" else 1, dtype=w.dtype,
                                             device=w.device))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                cache=None, layer: int = 0, last_only: bool = False) -> torch.Tensor:
        """As Attention.forward: x [B, T, dim] -> [B, Tq, dim].  The cache holds the real
        tokens only, so when decoding every step adds the prompt term for its own query."""
        out = self.attention(x, cos, sin, bias, cache, layer, last_only)
        return out + self.prompt_term(x[:, -1:] if last_only else x, cos, sin)

    def prompt_term(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Wo (g * softmax(q K_A^T / sqrt(hd)) V_A): x [B, Tq, dim] (the query positions) -> [B, Tq, dim]."""
        a, P = self.attention, self.prompt.shape[0]
        B, Tq, _ = x.shape
        hd = a.head_dim
        # The block computes q inside Attention.forward and does not return it: recompute it
        # (one more x Wq^T per adapted layer, as PEFT does), rotated at the same positions.
        q = apply_rope(a.wq(x).view(B, Tq, a.n_heads, hd), cos[:, -Tq:], sin[:, -Tq:]).transpose(1, 2)
        k = a.wk(self.prompt).view(P, a.n_kv_heads, hd).transpose(0, 1)  # [KV, P, hd], not rotated
        v = a.wv(self.prompt).view(P, a.n_kv_heads, hd).transpose(0, 1)  # [KV, P, hd]
        # grouped-query heads as in Attention.attend: head h reads kv head h // G, no copies
        q = q.reshape(B, a.n_kv_heads, a.n_groups, Tq, hd) * (1.0 / math.sqrt(hd))
        scores = torch.matmul(q, k[:, None].transpose(-1, -2)).float()  # [B, KV, G, Tq, P]
        # the gate: g [1] as it is, or tanh(g) per head [KV, G, 1, 1]
        g = torch.tanh(self.gate).view(a.n_kv_heads, a.n_groups, 1, 1) if self.gate_kind == "tanh" else self.gate
        probs = torch.softmax(scores, dim=-1).type_as(q) * g  # no mask: every query sees all P
        out = torch.matmul(probs, v[:, None])  # [B, KV, G, Tq, hd]
        return a.wo(out.reshape(B, a.n_heads, Tq, hd).transpose(1, 2).reshape(B, Tq, a.n_heads * hd))


class LlamaAdapter(AdaptedModel):
    """The base, frozen and untouched, run through `adapted`: the same model whose top
    blocks' attention is a PromptedAttention.  What trains: the prompts and gates."""

    method = "adapter"

    def describe(self) -> str:
        return (f"LLaMA-Adapter: {self.cfg.length}-vector prompts in the top {self.cfg.layers} of "
                f"{self.base.config.n_layers} layers, {self.cfg.gate} gates")

    def __init__(self, base: nn.Module, cfg: LlamaAdapterConfig, tokenizer=None):
        super().__init__(base, cfg)
        n = base.config.n_layers
        self.cfg = replace(cfg, layers=cfg.layer_count(n))  # files record the resolved count
        self.length, self.first_layer = cfg.length, n - self.cfg.layers
        blocks = [sharing_copy(b, attention=PromptedAttention(b.attention, cfg.length, cfg.gate))
                  if i >= self.first_layer else b for i, b in enumerate(base.layers)]
        self.adapted = sharing_copy(base, layers=nn.ModuleList(blocks))

    def prompted(self) -> Dict[int, PromptedAttention]:
        """layer index -> its PromptedAttention (the top `cfg.layers` layers)."""
        return {i: self.adapted.layers[i].attention for i in range(self.first_layer, self.config.n_layers)}

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        """input_ids, attention_mask: [B, T] -> (logits [B, T, V], hidden [B, T, dim]), as the base."""
        return self.adapted(input_ids, attention_mask, cache=cache, last_only=last_only)

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        """layers.{i}.prompt [P, dim] and layers.{i}.gate [1] (tanh: [H]) of every adapted layer."""
        return {f"layers.{i}.{part}": getattr(attn, part) for i, attn in self.prompted().items()
                for part in ("prompt", "gate")}
