"""The hand-written attention vs torch's scaled_dot_product_attention (GQA by repeating kv
heads), causal and padding masks, attention_bias and the KV cache.  The fast paths beside it
(query blocks, SDPA, the preallocated cache) are tested in test_fast_*.py."""
import torch
import torch.nn.functional as F

from conftest import B, HD, KV, T, padding_masks, random_qkv, sdpa_oracle, tiny_attention
from minillama.core.attention import KVCache, attention_bias


def test_attend_matches_sdpa_causal_gqa():
    q, k, v = random_qkv()
    key_mask = torch.ones(B, T, dtype=torch.bool)
    out = tiny_attention().attend(q, k, v, attention_bias(key_mask, T, torch.float32))
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, key_mask), atol=1e-5, rtol=1e-5)
    # also vs torch's own is_causal flag
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, kr, vr, is_causal=True), atol=1e-5, rtol=1e-5)


def test_attend_with_cache_offset_queries_see_all_earlier_keys():
    # 3 new queries against 7 keys (4 cached): query t sits at key index 4 + t
    q, k, v = random_qkv(seed=1, T_=3, S=7)
    key_mask = torch.ones(B, 7, dtype=torch.bool)
    out = tiny_attention().attend(q, k, v, attention_bias(key_mask, 3, torch.float32))
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, key_mask), atol=1e-5, rtol=1e-5)


def test_attend_with_padding_matches_sdpa_on_real_positions():
    q, k, v = random_qkv(seed=2)
    attn = tiny_attention()
    for side, key_mask in padding_masks().items():
        out = attn.attend(q, k, v, attention_bias(key_mask, T, torch.float32))
        assert torch.isfinite(out).all(), side  # padding queries see nothing but must not be NaN
        ref = sdpa_oracle(q, k, v, key_mask)
        real = key_mask  # queries at real positions
        torch.testing.assert_close(out.transpose(1, 2)[real], ref.transpose(1, 2)[real], atol=1e-5, rtol=1e-5,
                                   msg=side)


def test_padding_keys_have_no_influence():
    """Changing k/v at padded positions leaves real outputs unchanged."""
    q, k, v = random_qkv(seed=3)
    attn = tiny_attention()
    for side, key_mask in padding_masks().items():
        bias = attention_bias(key_mask, T, torch.float32)
        k2, v2 = k.clone(), v.clone()
        pad = ~key_mask[:, None, :, None].expand_as(k2)
        k2[pad] = 100.0
        v2[pad] = -50.0
        a = attn.attend(q, k, v, bias).transpose(1, 2)[key_mask]
        b = attn.attend(q, k2, v2, bias).transpose(1, 2)[key_mask]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=side)


def test_attention_bias_shape_and_semantics():
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)
    bias = attention_bias(key_mask, 2, torch.float32)  # 2 new queries at key indices 3 and 4
    assert bias.shape == (2, 1, 1, 2, 5)
    neg = torch.finfo(torch.float32).min
    allowed = torch.tensor([
        [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]],
        [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]],  # the padding query (key 4) sees itself only
    ], dtype=torch.bool)
    expected = torch.where(allowed, torch.tensor(0.0), torch.tensor(neg))
    assert torch.equal(bias[:, 0, 0], expected)
    assert attention_bias(key_mask, 2, torch.bfloat16).dtype == torch.bfloat16
    assert torch.isfinite(attention_bias(key_mask, 2, torch.float16)).all()  # finite min, not -inf


def test_kv_cache_growth_keeps_earlier_values():
    cache = KVCache(n_layers=2, batch=B, n_kv_heads=KV, head_dim=HD, capacity=2)
    written_k, written_v = [], []
    g = torch.Generator().manual_seed(7)
    for step in range(5):  # 1 + 2 + 3 + 4 + 5 = 15 positions, far past capacity 2
        n = step + 1
        k, v = torch.randn(B, KV, n, HD, generator=g), torch.randn(B, KV, n, HD, generator=g)
        start = cache.length
        for layer in range(2):
            vis_k, vis_v = cache.write(layer, k + layer, v - layer, start=start)
            assert vis_k.shape == (B, KV, start + n, HD)
        mask = cache.append_mask(torch.ones(B, n, dtype=torch.bool))
        assert mask.shape == (B, start + n)
        cache.length += n
        written_k.append(k)
        written_v.append(v)
    all_k, all_v = torch.cat(written_k, dim=2), torch.cat(written_v, dim=2)
    for layer in range(2):
        assert cache.keys[layer].shape[2] >= 15
        assert torch.equal(cache.keys[layer][:, :, :15], all_k + layer)
        assert torch.equal(cache.values[layer][:, :, :15], all_v - layer)
    assert cache.mask[:, :15].all()


def test_kv_cache_mask_growth_keeps_padding():
    cache = KVCache(n_layers=1, batch=2, n_kv_heads=1, head_dim=4, capacity=1)
    first = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    cache.append_mask(first)
    cache.length = 3
    m = cache.append_mask(torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(m[:, :3], first) and m[:, 3:].all()
