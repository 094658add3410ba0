"""The preallocated KV cache (minillama.fast.kv_cache) holds what the plain one holds after
every operation: writes past its capacity, a prefix, and row reorders (in place and not)."""
import pytest
import torch

from minillama.core.attention import KVCache
from minillama.fast.kv_cache import PreallocatedKVCache

B, KV, HD, LAYERS = 3, 2, 4, 2


def visible(cache):
    """What a step reads: per layer (keys, values) [B, KV, length, hd], and the mask [B, length]."""
    n = cache.length
    return [(k[:, :, :n], v[:, :, :n]) for k, v in zip(cache.keys, cache.values)], cache.mask[:, :n]


def step(cache, k, v, mask):
    """One forward's bookkeeping: the mask first, every layer's keys, then the length."""
    cache.append_mask(mask)
    for layer in range(LAYERS):
        cache.write(layer, k + layer, v - layer, start=cache.length)
    cache.length += k.shape[2]


def assert_same(a, b):
    (kv_a, mask_a), (kv_b, mask_b) = visible(a), visible(b)
    assert torch.equal(mask_a, mask_b) and a.batch == b.batch
    for (ka, va), (kb, vb) in zip(kv_a, kv_b):
        assert torch.equal(ka, kb) and torch.equal(va, vb)


@pytest.mark.parametrize("prefix", [0, 3])
def test_preallocated_cache_equals_plain_cache(prefix):
    g = torch.Generator().manual_seed(0)
    caches = []
    for cache_type in (KVCache, PreallocatedKVCache):
        if prefix:
            pk = [torch.randn(B, KV, prefix, HD, generator=torch.Generator().manual_seed(i)) for i in range(LAYERS)]
            caches.append(cache_type.from_prefix(pk, [p * 2 for p in pk], capacity=prefix + 2))
        else:
            caches.append(cache_type(LAYERS, B, KV, HD, capacity=2))
    plain, fast = caches
    reorders = [None, torch.tensor([0, 0, 2]), None, torch.tensor([1, 0, 2]), torch.tensor([2, 2, 1])]
    for n, index in zip([4, 1, 1, 3, 1], reorders):  # 10 new positions: past every capacity
        k, v = torch.randn(B, KV, n, HD, generator=g), torch.randn(B, KV, n, HD, generator=g)
        mask = torch.rand(B, n, generator=g) > 0.3
        for cache in (plain, fast):
            step(cache, k, v, mask)
            if index is not None:
                cache.reorder(index)
        assert_same(plain, fast)
    assert fast.keys[0].shape[2] >= plain.length  # the buffer kept growing, in place
