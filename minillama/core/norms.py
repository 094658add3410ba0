"""Normalisation layers, written out by hand.

LayerNorm is the course's version: (x - mean) / sqrt(var + eps) * gain, with a
learnable gain and no bias.  RMSNorm is what llama2.c and Meta's Llama use:
x / sqrt(mean(x^2) + eps) * gain.  Both compute in float32 and cast back, so
bf16 models normalise as precisely as fp32 ones.
"""
import torch
from torch import nn


class Norm(nn.Module):
    """What both share: the gain [dim], and float32 arithmetic cast back to x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim] -> [..., dim]"""
        return self._norm(x.float()).type_as(x) * self.weight


class LayerNorm(Norm):
    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as F.layer_norm
        return (x - mean) * torch.rsqrt(var + self.eps)


class RMSNorm(Norm):
    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The norm layer named by LlamaConfig.norm."""
    norms = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
    if kind not in norms:
        raise ValueError(f"unknown norm {kind!r}: use 'layernorm' or 'rmsnorm'")
    return norms[kind](dim, eps)
