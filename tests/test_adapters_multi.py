"""A different adapter per row (minillama/adapters/multi.py): every row of a mixed,
left-padded batch equals that row run alone with its own adapter (or the base alone),
in the forward, with last_only, and in greedy generation; bad mixes are one line."""
import pytest
import torch

from conftest import left_padded_rows, tiny_model
from minillama.adapters import LlamaAdapterConfig, LoraConfig, PrefixConfig, PrefixTuningConfig, attach
from minillama.adapters.multi import MultiAdapter
from minillama.errors import MinillamaError


def adapters_of(base):
    """Three prefixes of different lengths (5, 2, 3), one of them prefix tuning, folded."""
    torch.manual_seed(0)
    adapters = {"a": attach(base, PrefixConfig(length=5)), "b": attach(base, PrefixConfig(length=2)),
                "c": attach(base, PrefixTuningConfig(length=3, hidden=16)).finalize()}
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.kv.normal_(0.0, 1.0)  # keys/values of a real model's scale (the 0.02 init barely shows)
    return {name: adapter.eval() for name, adapter in adapters.items()}


ASSIGNMENT = ["a", "b", None, "c", "a", "b"]


def test_each_row_equals_the_row_alone_with_its_adapter():
    base = tiny_model()
    adapters = adapters_of(base)
    multi = MultiAdapter(base, adapters)
    ids, mask = left_padded_rows(len(ASSIGNMENT))
    with torch.no_grad():
        logits, hidden = multi(ids, mask, adapter=ASSIGNMENT)
        last_logits, last_hidden = multi(ids, mask, adapter=ASSIGNMENT, last_only=True)
        for row, name in enumerate(ASSIGNMENT):
            real = mask[row].bool()
            alone = (adapters[name] if name else base)(ids[row:row + 1, real])
            torch.testing.assert_close(logits[row, real], alone[0][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(hidden[row, real], alone[1][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(last_logits[row, 0], alone[0][0, -1], atol=1e-5, rtol=0)
            torch.testing.assert_close(last_hidden[row, 0], alone[1][0, -1], atol=1e-5, rtol=0)
        # the prefixes matter: the same row under each adapter (and none) gives other logits
        under = [multi(ids[:1], mask[:1], adapter=[name])[0] for name in ("a", "b", "c", None)]
        assert min((x - y).abs().max() for i, x in enumerate(under) for y in under[i + 1:]) > 1e-2
    assert multi.rows(["b", None]).virtual_tokens == 2  # a batch pads only to its own longest prefix


def test_generate_row_by_row_equals_each_adapter_alone():
    base = tiny_model()
    adapters = adapters_of(base)
    multi = MultiAdapter(base, adapters)
    ids, mask = left_padded_rows(len(ASSIGNMENT), T=7, seed=1)
    mixed = multi.generate(ids, 8, adapter=ASSIGNMENT, attention_mask=mask)
    for row, name in enumerate(ASSIGNMENT):
        real = mask[row].bool()
        alone = (adapters[name] if name else base).generate(ids[row:row + 1, real], 8)
        assert torch.equal(mixed[row, -8:], alone[0, -8:]), row
    # and the cache is what makes it: without it the same tokens come out
    assert torch.equal(multi.generate(ids, 8, adapter=ASSIGNMENT, attention_mask=mask, use_cache=False), mixed)


def test_bad_mixes_are_one_line():
    base = tiny_model()
    for cfg, method in ((LoraConfig(), "lora"), (LlamaAdapterConfig(), "adapter")):
        with pytest.raises(MinillamaError, match=f"is {method}: rows mix deep prefixes only") as e:
            MultiAdapter(base, {"x": attach(tiny_model(), cfg)})
        assert "\n" not in str(e.value)
    with pytest.raises(MinillamaError, match="attached to another base model"):
        MultiAdapter(base, {"x": attach(tiny_model(seed=3), PrefixConfig(length=2))})
    multi = MultiAdapter(base, {"x": attach(base, PrefixConfig(length=2))})
    with pytest.raises(MinillamaError, match="unknown adapter name 'y': this batch knows x"):
        multi(torch.zeros(1, 3, dtype=torch.long), adapter=["y"])
    with pytest.raises(MinillamaError, match="has 2 rows, got a batch of 3"):
        multi.rows(["x", None]).new_cache(3)
