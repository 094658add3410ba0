"""LayerNorm and RMSNorm vs independent oracles (torch's layer_norm, the RMS formula)."""
import pytest
import torch
import torch.nn.functional as F

from minillama.core.norms import LayerNorm, RMSNorm, make_norm


def _random_gain(dim, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, generator=g) * 0.7 + 1.3  # non-unit, some negative entries


def test_layernorm_matches_torch_layer_norm_with_gain():
    torch.manual_seed(0)
    dim = 48
    norm = LayerNorm(dim, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(_random_gain(dim))
    x = torch.randn(3, 7, dim) * 4.0 + 2.5  # non-zero mean, non-unit variance
    expected = F.layer_norm(x, (dim,), weight=norm.weight, bias=None, eps=1e-5)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_layernorm_eps_is_inside_the_sqrt():
    # a constant row has variance 0: the output is 0/sqrt(eps), finite, as in F.layer_norm
    norm = LayerNorm(8, eps=1e-2)
    x = torch.full((2, 8), 3.0)
    x[1] = torch.arange(8.0)
    expected = F.layer_norm(x, (8,), weight=norm.weight, eps=1e-2)
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)
    assert torch.isfinite(norm(x)).all()


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    dim = 40
    eps = 1e-5
    norm = RMSNorm(dim, eps=eps)
    g = _random_gain(dim, seed=2)
    with torch.no_grad():
        norm.weight.copy_(g)
    x = torch.randn(2, 5, dim, dtype=torch.float64) * 3.0 + 1.0
    expected = x / torch.sqrt((x ** 2).mean(dim=-1, keepdim=True) + eps) * g.double()
    torch.testing.assert_close(norm(x.float()), expected.float(), atol=1e-5, rtol=1e-5)


def test_rmsnorm_differs_from_layernorm_on_non_centred_input():
    # guards against one silently being the other
    x = torch.randn(4, 16) + 5.0
    assert not torch.allclose(RMSNorm(16)(x), LayerNorm(16)(x), atol=1e-2)


def test_bf16_input_path_normalises_in_float32():
    """A bf16 module on bf16 input returns bf16 equal to normalising in fp32,
    rounding to bf16, then scaling by the bf16 gain (Meta's recipe)."""
    torch.manual_seed(0)
    dim = 64
    g = _random_gain(dim, seed=3)
    x32 = torch.randn(2, 6, dim) * 10.0 + 3.0
    x = x32.to(torch.bfloat16)
    xf = x.float()
    refs = {
        "layernorm": F.layer_norm(xf, (dim,), eps=1e-5),
        "rmsnorm": xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5),
    }
    for kind, ref_normed in refs.items():
        norm = make_norm(kind, dim, 1e-5)
        with torch.no_grad():
            norm.weight.copy_(g)
        norm = norm.to(torch.bfloat16)
        out = norm(x)
        assert out.dtype == torch.bfloat16, kind
        expected = ref_normed.to(torch.bfloat16) * g.to(torch.bfloat16)
        # at most one bf16 rounding step apart (fp32 reduction order may differ)
        torch.testing.assert_close(out.float(), expected.float(), atol=1e-3, rtol=2 ** -7, msg=kind)
        # and within bf16 precision of the fp32 result
        torch.testing.assert_close(out.float(), ref_normed * g, atol=0.05, rtol=0.02, msg=kind)


def test_make_norm_rejects_unknown_kind():
    with pytest.raises(ValueError):
        make_norm("batchnorm", 8, 1e-5)
