"""RoPE vs an independent complex-number reference, and the Llama 3 frequency scaling vs its formula."""
import math

import pytest
import torch

from minillama.core.config import RopeScaling
from minillama.core.rope import (apply_rope, apply_rotary_emb, llama3_scaled_frequencies, precompute_rope_table,
                            rope_frequencies)


def complex_rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0,
                           freqs: torch.Tensor = None) -> torch.Tensor:
    """Adjacent pairs (x0, x1) as x0 + i x1, multiplied by exp(i p theta_i), in float64.
    x: [B, T, H, hd]; positions: [B, T]."""
    hd = x.shape[-1]
    if freqs is None:
        freqs = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = positions.double()[..., None] * freqs.double()  # [B, T, hd/2]
    rot = torch.polar(torch.ones_like(angles), angles)[:, :, None, :]  # broadcast over heads
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hd // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).flatten(-2)


def test_apply_rotary_emb_matches_complex_reference_with_gqa_key():
    torch.manual_seed(0)
    B, T, H, KV, hd = 2, 11, 4, 2, 16
    q = torch.randn(B, T, H, hd)
    k = torch.randn(B, T, KV, hd)  # fewer key heads (GQA)
    q_out, k_out = apply_rotary_emb(q, k, hd, max_seq_len=32)
    assert q_out.shape == q.shape and k_out.shape == k.shape
    pos = torch.arange(T).expand(B, T)
    torch.testing.assert_close(q_out.double(), complex_rope_reference(q, pos), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_out.double(), complex_rope_reference(k, pos), atol=1e-5, rtol=1e-5)


def test_apply_rotary_emb_custom_theta_and_long_positions():
    torch.manual_seed(1)
    B, T, H, hd = 1, 200, 2, 8
    q, k = torch.randn(B, T, H, hd), torch.randn(B, T, H, hd)
    q_out, k_out = apply_rotary_emb(q, k, hd, max_seq_len=256, theta=500000.0)
    pos = torch.arange(T)[None]
    # angles up to ~200 rad: float32 angle rounding allows ~1e-5 absolute error
    torch.testing.assert_close(q_out.double(), complex_rope_reference(q, pos, 500000.0), atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(k_out.double(), complex_rope_reference(k, pos, 500000.0), atol=5e-5, rtol=1e-5)


def test_apply_rotary_emb_rejects_too_long_sequence():
    q = torch.randn(1, 9, 2, 8)
    with pytest.raises(ValueError):
        apply_rotary_emb(q, q, 8, max_seq_len=8)


def test_rope_preserves_norm_of_each_pair_and_position_zero_is_identity():
    torch.manual_seed(2)
    x = torch.randn(1, 5, 3, 8)
    out, _ = apply_rotary_emb(x, x, 8, max_seq_len=8)
    pair_norm = lambda t: t.reshape(*t.shape[:-1], 4, 2).norm(dim=-1)
    torch.testing.assert_close(pair_norm(out), pair_norm(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 0], x[:, 0], atol=0, rtol=0)


def test_precompute_table_indexed_by_arbitrary_positions():
    """apply_rope with per-example positions (as left padding / prefixes produce)."""
    torch.manual_seed(3)
    hd, max_len = 16, 64
    cos, sin = precompute_rope_table(hd, max_len)
    assert cos.shape == (max_len, hd // 2) and cos.dtype == torch.float32
    freqs64 = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * freqs64
    torch.testing.assert_close(cos.double(), torch.cos(angles), atol=1e-5, rtol=0)
    torch.testing.assert_close(sin.double(), torch.sin(angles), atol=1e-5, rtol=0)

    positions = torch.tensor([[0, 0, 1, 2, 3], [5, 17, 30, 31, 63]])
    x = torch.randn(2, 5, 3, hd)
    out = apply_rope(x, cos[positions], sin[positions])
    torch.testing.assert_close(out.double(), complex_rope_reference(x, positions), atol=2e-5, rtol=1e-5)


def test_apply_rope_keeps_bf16_dtype():
    torch.manual_seed(4)
    x = torch.randn(1, 6, 2, 8)
    cos, sin = precompute_rope_table(8, 8)
    out = apply_rope(x.to(torch.bfloat16), cos[None, :6], sin[None, :6])
    assert out.dtype == torch.bfloat16
    ref = complex_rope_reference(x.to(torch.bfloat16).float(), torch.arange(6)[None])
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=1e-2)


LLAMA32 = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)


def _llama3_formula(freqs, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """The scaling exactly as reference-facts.md states it, vectorised in float64."""
    f = freqs.double()
    wavelen = 2 * math.pi / f
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mid = (1 - smooth) * f / factor + smooth * f
    return torch.where(wavelen < high_wavelen, f, torch.where(wavelen > low_wavelen, f / factor, mid))


def test_llama3_scaling_matches_formula_all_three_regimes():
    freqs = rope_frequencies(64, 500000.0)  # Llama 3.2: head_dim 64, base 500000
    scaled = llama3_scaled_frequencies(freqs, **LLAMA32)
    expected = _llama3_formula(freqs, **LLAMA32)
    torch.testing.assert_close(scaled.double(), expected, rtol=1e-6, atol=0)
    # the three regimes are all exercised by these frequencies
    wavelen = 2 * math.pi / freqs.double()
    assert (wavelen < 8192 / 4).any() and (wavelen > 8192 / 1).any()
    assert ((wavelen >= 8192 / 4) & (wavelen <= 8192)).any()
    # high frequencies untouched, lowest divided by the factor
    assert scaled[0] == freqs[0]
    torch.testing.assert_close(scaled[-1], freqs[-1] / 32.0)


def test_llama3_scaling_matches_transformers_rope_init():
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = HFLlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, max_position_embeddings=131072,
                       rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, **LLAMA32))
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    assert attention_scaling == 1.0
    ours = llama3_scaled_frequencies(rope_frequencies(64, 500000.0), **LLAMA32)
    torch.testing.assert_close(ours, inv_freq.float(), rtol=1e-5, atol=0)


def test_precompute_table_applies_scaling():
    scaling = RopeScaling(**LLAMA32)
    cos, sin = precompute_rope_table(64, 100, 500000.0, scaling)
    freqs = _llama3_formula(rope_frequencies(64, 500000.0), **LLAMA32)
    angles = torch.arange(100, dtype=torch.float64)[:, None] * freqs
    torch.testing.assert_close(cos.double(), torch.cos(angles), atol=2e-5, rtol=0)
    torch.testing.assert_close(sin.double(), torch.sin(angles), atol=2e-5, rtol=0)
    plain_cos, _ = precompute_rope_table(64, 100, 500000.0)
    assert not torch.allclose(cos, plain_cos)
