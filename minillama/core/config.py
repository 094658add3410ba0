"""The model's hyper-parameters, one dataclass for every supported family.

A llama2.c "stories" checkpoint and a Llama 3.2 checkpoint differ only in the
values below (vocab, GQA, RoPE base and scaling, FFN width rule, norm, tied
output), so one `LlamaConfig` describes both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

NORMS = ("layernorm", "rmsnorm")


@dataclass
class RopeScaling:
    """Llama 3 frequency scaling ("rope_type": "llama3") of RoPE."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class LlamaConfig:
    """The architecture: everything a checkpoint fixes, nothing about how it runs
    (that is `Runtime`).  Two models with equal configs can share weights and adapters."""

    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: Optional[int] = None  # None: same as n_heads (no GQA)
    vocab_size: int = 32000
    hidden_dim: Optional[int] = None  # None: llama2.c / Meta width rule below
    multiple_of: int = 32
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    norm: str = "rmsnorm"  # "layernorm" (the course's) or "rmsnorm" (llama2.c, Meta)
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.hidden_dim is None:
            self.hidden_dim = ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Runtime:
    """How a model runs, not what it is: never stored in a checkpoint or in an
    adapter's base identity, and free to differ between two runs of one model."""

    dropout: float = 0.0    # attention, residual and embedding dropout while training

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: Optional[float] = None) -> int:
    """SwiGLU width: 2/3 of 4*dim (same FLOPs as a 4*dim GELU MLP), optionally
    scaled by Meta's ffn_dim_multiplier, rounded up to a multiple of multiple_of."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
