"""minillama.fast.attention.FastAttention equals the hand-written Attention: torch's SDPA
kernel, causal query blocks (values and gradients), both with padding and a prefix."""
import torch

from minillama.core.attention import attention_bias
from minillama.core.rope import precompute_rope_table
from minillama.fast import speed_up
from conftest import B, H, HD, T, padding_masks, random_qkv, sdpa_oracle, tiny_attention


def _fast(sdpa: bool = False):
    return speed_up(tiny_attention(), sdpa=sdpa)


def test_sdpa_path_equals_hand_written_path():
    torch.manual_seed(5)
    hand, fast = tiny_attention(), _fast(sdpa=True)
    fast.load_state_dict(hand.state_dict())
    x = torch.randn(B, T, H * HD)
    cos, sin = precompute_rope_table(HD, 16)
    cos, sin = cos[None, :T].expand(B, -1, -1), sin[None, :T].expand(B, -1, -1)
    for side, key_mask in padding_masks().items():
        bias = attention_bias(key_mask, T, torch.float32)
        a, b = hand(x, cos, sin, bias), fast(x, cos, sin, bias)
        torch.testing.assert_close(a[key_mask], b[key_mask], atol=1e-5, rtol=1e-5, msg=side)
        # padding rows too: both give the uniform average, no NaN
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=side)


def test_query_blocks_equal_one_block_values_and_gradients():
    """Causal attention in blocks of 3 queries (each scoring only the keys it can see)
    equals one [T, S] block and the SDPA oracle: 7 queries after 3 cached/prefix keys,
    left and right padding, both attention paths, and the gradients of q, k and v."""
    S = T + 3
    for use_sdpa in (False, True):
        attn = _fast(sdpa=use_sdpa)
        for side, pad in padding_masks().items():
            key_mask = torch.cat([torch.ones(B, 3, dtype=torch.bool), pad], dim=1)  # [B, S]
            bias = attention_bias(key_mask, T, torch.float32)
            results = []
            for block in (T, 3):
                attn.query_block = block
                q, k, v = (t.requires_grad_() for t in random_qkv(seed=9, S=S))
                out = attn.attend(q, k, v, bias)
                (out.transpose(1, 2)[pad] * torch.arange(1.0, 1 + H * HD).view(H, HD)).sum().backward()
                results.append((out, q.grad, k.grad, v.grad))
            (one, *one_grads), (blocked, *blocked_grads) = results
            msg = f"sdpa={use_sdpa} {side}"
            torch.testing.assert_close(blocked, one, atol=1e-6, rtol=1e-5, msg=msg)
            for a, b in zip(blocked_grads, one_grads):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=msg)
            ref = sdpa_oracle(*(t.detach() for t in random_qkv(seed=9, S=S)), key_mask)
            torch.testing.assert_close(blocked.transpose(1, 2)[pad], ref.transpose(1, 2)[pad], atol=1e-5, rtol=1e-5,
                                       msg=msg)
