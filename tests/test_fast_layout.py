"""The decode layout (fused, column-major weights) changes memory order only:
same values, same results, same training, and it steps aside when it must."""
import copy

import torch

from conftest import tiny_model
import pytest

from minillama import load_model
from minillama.formats import save_checkpoint
from minillama.fast.layout import fused_weight, use_decode_layout
from minillama.adapters import inject_lora


def _ids(model, B=2, T=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (B, T), generator=g)


def test_layout_fuses_and_keeps_values_and_parameters():
    model = tiny_model(fast=True)
    reference = copy.deepcopy(model)
    params_before = dict(model.named_parameters())
    use_decode_layout(model)
    attn, ffn = model.layers[0].attention, model.layers[0].feed_forward
    assert fused_weight(attn) is None  # grad enabled and weights trainable: use the layers
    with torch.no_grad():
        fused = fused_weight(attn)
        assert fused is not None and fused_weight(ffn) is not None
    # q, k, v weights are column blocks of one [dim, q + k + v] tensor
    assert fused.shape == (64, attn.wq.out_features + attn.wk.out_features + attn.wv.out_features)
    assert attn.wk.weight.data_ptr() == fused[:, attn.wq.out_features].data_ptr()
    assert model.output.weight.stride(0) == 1 and model.layers[1].attention.wo.weight.stride(0) == 1
    # same Parameter objects, same names, shapes and values
    assert dict(model.named_parameters()) == params_before
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert a.shape == b.shape and torch.equal(a, b), name


def test_layout_gives_the_same_logits_and_tokens():
    model = tiny_model(fast=True)
    reference = copy.deepcopy(model).eval()
    ids = _ids(model)
    with torch.no_grad():
        expected = reference(ids)[0]
        expected_tokens = reference.generate(ids[:1], 12, use_cache=False)  # never converted: no cache, no layout
    use_decode_layout(model.eval())
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(model.generate(ids[:1], 12), expected_tokens)


def test_training_after_layout_gets_the_same_gradients():
    """With grad enabled the fused product is skipped, so every weight gets its own gradient."""
    model, reference = tiny_model(fast=True), tiny_model(fast=True)
    use_decode_layout(model)
    ids = _ids(model)
    for m in (model, reference):
        m(ids)[0].logsumexp(-1).mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    # an optimizer-style in-place update reaches the fused tensor (shared storage)
    attn = model.layers[0].attention
    with torch.no_grad():
        attn.wv.weight.add_(1.0)
        assert torch.equal(fused_weight(attn)[:, -attn.wv.out_features:], attn.wv.weight.t())


def test_layout_under_inference_mode_leaves_trainable_weights():
    model = tiny_model(fast=True)
    with torch.inference_mode():
        model.generate(_ids(model)[:1], 3)
    assert not model.layers[0].attention.wq.weight.is_inference()
    model(_ids(model))[0].sum().backward()  # would raise for inference tensors
    assert model.layers[0].attention.wq.weight.grad is not None


def test_lora_after_layout_is_not_bypassed():
    model = tiny_model(fast=True)
    use_decode_layout(model)
    reference = copy.deepcopy(model)
    for m in (model, reference):
        torch.manual_seed(3)
        for layer in inject_lora(m, ("wq", "wv", "w1"), rank=2):
            torch.nn.init.normal_(layer.lora_B)
    assert fused_weight(model.layers[0].attention) is None and fused_weight(model.layers[0].feed_forward) is None
    ids = _ids(model)
    with torch.no_grad():
        out = model(ids)[0]
        torch.testing.assert_close(out, reference(ids)[0])
        # the LoRA update is really applied (not the bare fused base weights)
        assert not torch.allclose(out, tiny_model(fast=True)(ids)[0], atol=1e-3)


def test_moved_model_drops_stale_fusion():
    model = tiny_model(fast=True)
    use_decode_layout(model)
    model.to(torch.float64)
    attn = model.layers[0].attention
    assert fused_weight(attn) is None and "_fused_weight" not in attn.__dict__
    with torch.no_grad():
        out = model(_ids(model))[0]
    assert out.dtype == torch.float64


def test_non_float32_weights_are_left_alone():
    model = tiny_model(fast=True).to(torch.bfloat16)
    use_decode_layout(model)
    assert fused_weight(model.layers[0].attention) is None
    assert model.output.weight.is_contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt", "bin"])
def test_checkpoint_of_laid_out_model_round_trips(tmp_path, fmt):
    model = tiny_model(fast=True).eval()
    use_decode_layout(model)
    path = str(tmp_path / f"m.{fmt}")
    save_checkpoint(model, path, fmt)
    loaded = load_model(path, norm="rmsnorm").eval()
    ids = _ids(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], atol=1e-5, rtol=1e-5)
