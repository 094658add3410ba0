"""minillama.fast.speed_up and prepare_for_decoding: a sped-up model is the same model
(parameters, state_dict) and decodes the same tokens as the plain core, greedy and beam,
with and without a prefix adapter; decoding never changes the caller's weights by itself."""
import pytest
import torch

from conftest import tiny_model
from minillama.adapters import PrefixConfig, attach
from minillama.core.attention import Attention, KVCache
from minillama.fast import FastAttention, PreallocatedKVCache, is_sped_up, prepare_for_decoding


def lively(fast: bool):
    model = tiny_model(seed=3, fast=fast, tie_embeddings=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10.0) if p.dim() == 2 else None
    return model


def test_speed_up_keeps_parameters_and_swaps_only_how_they_compute():
    plain, fast = lively(False), lively(True)
    assert list(plain.state_dict()) == list(fast.state_dict())
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), name
    assert type(plain.layers[0].attention) is Attention and type(fast.layers[0].attention) is FastAttention
    assert plain.cache_type is KVCache and fast.cache_type is PreallocatedKVCache
    assert is_sped_up(fast) and not is_sped_up(plain)


@pytest.mark.slow
@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_fast_model_decodes_the_tokens_of_the_plain_core(beam_size, with_prefix):
    ids = torch.tensor([[0, 0, 5, 9, 11], [7, 3, 8, 2, 4]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    outs = []
    for fast in (False, True):
        model = lively(fast)
        if with_prefix:
            torch.manual_seed(0)
            model = attach(model, PrefixConfig(length=4, init="random"))
        prepare_for_decoding(model)
        outs.append(model.generate(ids, 12, attention_mask=mask, beam_size=beam_size))
    assert torch.equal(outs[0], outs[1])


def test_decoding_leaves_the_weights_as_they_were():
    for fast in (False, True):
        model = lively(fast)
        strides = {n: p.stride() for n, p in model.named_parameters()}
        model.generate(torch.tensor([[5, 6, 7]]), 4)
        assert {n: p.stride() for n, p in model.named_parameters()} == strides  # generate alone: no re-layout
    plain = lively(False)
    prepare_for_decoding(plain)
    assert plain.layers[0].attention.wq.weight.is_contiguous()  # a plain model is never re-laid out
    fast = prepare_for_decoding(lively(True))
    assert fast.layers[0].attention.wq.weight.stride()[0] == 1  # column-major after the explicit call


def test_load_model_is_plain_unless_asked_and_runconfig_asks_by_default(tmp_path):
    from minillama import load_model
    from minillama.formats import save_checkpoint
    from minillama.runconfig import RunConfig
    path = str(tmp_path / "m.pt")
    save_checkpoint(lively(False), path)
    assert not is_sped_up(load_model(path, norm="rmsnorm"))
    assert is_sped_up(load_model(path, norm="rmsnorm", fast=True))
    sdpa = load_model(path, norm="rmsnorm", use_sdpa=True)
    assert sdpa.layers[0].attention.sdpa is True
    assert RunConfig().fast is True and RunConfig(fast=False).fast is False
