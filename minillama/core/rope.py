"""Rotary position embeddings (RoPE), llama2.c / Meta convention.

Each head vector is read as head_dim/2 *adjacent* pairs (x0, x1), (x2, x3), ...
Pair i at position p is rotated by the angle p * theta_i, with
theta_i = base^(-2i / head_dim).  The angles are precomputed once as a table of
cos and sin, [max_seq_len, head_dim/2], and indexed by position, so left-padded
batches and prefixes (whose inputs start at a later position) use the same code.

Llama 3 stretches the low frequencies ("llama3" rope scaling) so the model
reads contexts longer than it was pre-trained on: `llama3_scaled_frequencies`.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/head_dim) for i in [0, head_dim/2): [head_dim/2] float32."""
    # float32 throughout, as llama2.c and Meta compute it, so tables match bit for bit
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))


def llama3_scaled_frequencies(freqs: torch.Tensor, factor: float, low_freq_factor: float,
                              high_freq_factor: float, original_max_position_embeddings: int) -> torch.Tensor:
    """Llama 3 scaling: keep high frequencies, divide low ones by `factor`,
    interpolate smoothly in between (wavelength = 2*pi/freq).  freqs: [hd/2]."""
    old_ctx, f = original_max_position_embeddings, freqs.double()  # float64, as Meta's Python floats
    wavelen = 2 * math.pi / f
    smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    scaled = torch.where(wavelen > old_ctx / low_freq_factor, f / factor, (1 - smooth) * f / factor + smooth * f)
    return torch.where(wavelen < old_ctx / high_freq_factor, f, scaled).to(freqs.dtype)


def precompute_rope_table(head_dim: int, max_seq_len: int, theta: float = 10000.0,
                          scaling=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of p * theta_i: each [max_seq_len, head_dim/2] float32; `scaling`: a
    config.RopeScaling (Llama 3) or None."""
    freqs = rope_frequencies(head_dim, theta)
    if scaling is not None:
        freqs = llama3_scaled_frequencies(freqs, scaling.factor, scaling.low_freq_factor,
                                          scaling.high_freq_factor, scaling.original_max_position_embeddings)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x.

    x: [B, T, H, head_dim]; cos, sin: [B or 1, T, head_dim/2] (the table rows of
    each token's position).  Returns x's shape and dtype; computes in float32."""
    # (x_even + i x_odd) * (cos + i sin) is the rotation of each pair, as one complex
    # product: the same arithmetic as the two-line real form.
    x_pairs = torch.view_as_complex(x.float().contiguous().view(*x.shape[:-1], -1, 2))  # [B, T, H, hd/2]
    rotation = torch.complex(cos, sin).unsqueeze(2)  # broadcast over heads
    return torch.view_as_real(x_pairs * rotation).flatten(-2).type_as(x)


def apply_rotary_emb(query: torch.Tensor, key: torch.Tensor, head_dim: int, max_seq_len: int,
                     theta: float = 10000.0, scaling=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The course's function: rotate query and key, [B, T, n_heads, head_dim]
    each (key may have fewer heads), for positions 0..T-1."""
    seqlen = query.shape[1]
    if seqlen > max_seq_len:
        raise ValueError(f"sequence length {seqlen} exceeds max_seq_len {max_seq_len}")
    cos, sin = precompute_rope_table(head_dim, max_seq_len, theta, scaling)
    cos, sin = cos[:seqlen].to(query.device)[None], sin[:seqlen].to(query.device)[None]
    return apply_rope(query, cos, sin), apply_rope(key, cos, sin)
