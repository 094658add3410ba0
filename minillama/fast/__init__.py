"""Speed-only paths beside the core, applied explicitly and tested equal to it.

The hand-written core (`minillama.core`) computes every result; this package computes the
same results faster, and only where asked:

    fast.speed_up(model, sdpa=False)   # in place: FastAttention, FastFeedForward, PreallocatedKVCache
    fast.prepare_for_decoding(model)   # before generating: fused, column-major fp32 CPU weights

The command line does both (`RunConfig.fast`, on unless `--no_fast`); `load_model(path,
fast=True)` does the first.  Each piece says what it speeds up and why in its module:
attention.py (fused q|k|v, causal query blocks, SDPA), feed_forward.py (fused gate|up),
kv_cache.py (in-place cache writes and beam reorders), layout.py (the decode layout).
"""
from __future__ import annotations

from torch import nn

from ..core.attention import Attention
from ..core.model import FeedForward, Llama
from .attention import FastAttention
from .feed_forward import FastFeedForward
from .kv_cache import PreallocatedKVCache
from .layout import use_decode_layout

FAST_CLASSES = {Attention: FastAttention, FeedForward: FastFeedForward}


def speed_up(model: nn.Module, sdpa: bool = False) -> nn.Module:
    """Give every attention and feed-forward module of `model` (a Llama, or a backbone
    around one) its fast class, and every Llama the preallocated KV cache; in place, returns
    model.  Parameters, state_dict and outputs stay as they were (the fast classes only
    override how they compute).  sdpa: attention through torch's fused kernel."""
    for module in model.modules():
        fast_class = FAST_CLASSES.get(type(module))
        if fast_class is not None:
            module.__class__ = fast_class
        if isinstance(module, FastAttention):
            module.sdpa = sdpa
        if isinstance(module, Llama):
            module.cache_type = PreallocatedKVCache
    return model


def is_sped_up(model: nn.Module) -> bool:
    return any(isinstance(module, FastAttention) for module in model.modules())


def prepare_for_decoding(model: nn.Module) -> nn.Module:
    """Store a sped-up model's float32 CPU weights fused and column-major (layout.py), which
    one-row decoding products read faster; a plain model is left as it is.  Values, shapes,
    parameters and state_dict keys stay; call it before generating, not before training."""
    if is_sped_up(model):
        use_decode_layout(model)
    return model


__all__ = ["speed_up", "prepare_for_decoding", "is_sped_up", "FastAttention", "FastFeedForward",
           "PreallocatedKVCache", "use_decode_layout"]
