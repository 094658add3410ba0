"""Weight memory layout for fast one-token decoding on CPU.

A linear layer computes y = x W^T with W stored row-major as [out, in].  When
decoding, x is a single row per sequence, so each product is a matrix-vector
product whose speed is the speed of reading W from memory: every weight is read
once per generated token.  Two layout changes make that reading faster:

1. Column-major weights.  MKL reads a row-major W for this product much more
   slowly than the same numbers stored column-major (W^T contiguous, [in, out]);
   bench/generate.py measures both layouts' products (RESULTS.md).  Batched products
   (prefill, training) run at the same speed in either layout.
2. Fused projections.  q, k and v (and the SwiGLU gate and up projections)
   read the same input, so their weights can sit side by side in one
   [in, q + k + v] tensor and be read by one product: one long stream instead
   of three short ones.

`use_decode_layout(model)` does both in place.  Each projection's weight
becomes a view into its group's fused tensor: values, shapes ([out, in]),
state_dict keys and Parameter objects stay the same, so results, optimizers,
adapters and checkpoints are unaffected, and the layers still work one by one.
A module that declares `fused_projections` asks `fused_weight(self)` for the
fused tensor and falls back to its layers when it gets None.

Only float32 CPU weights change: the bf16/fp16 CPU kernels are 10-70x *slower*
column-major, and GPUs do not care.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

_FUSED = "_fused_weight"  # plain attribute (not a parameter, not in the state dict)


def _eligible(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def _projections(module: nn.Module) -> List[nn.Module]:
    return [getattr(module, name) for name in module.fused_projections]


def fused_weight(module: nn.Module) -> Optional[torch.Tensor]:
    """The [in, sum of outs] tensor holding module's `fused_projections` side by
    side, when one product with it may replace theirs; else None.

    None when the layers were never fused, have since been replaced (LoRA) or
    moved (`.to()`), or when autograd needs their weights' own gradients.
    Called on every forward, so it only compares identities and pointers."""
    record = module.__dict__.get(_FUSED)
    if record is None:
        return None
    fused, members = record
    for name, layer, weight, pointer in members:
        if (module._modules.get(name) is not layer or layer._parameters.get("weight") is not weight
                or weight.data_ptr() != pointer):
            del module.__dict__[_FUSED]  # stale for good: free its memory
            return None
    if torch.is_grad_enabled() and any(m[2].requires_grad for m in members):
        return None
    return fused


def _fuse(module: nn.Module):
    layers = _projections(module)
    fused = torch.cat([layer.weight.t() for layer in layers], dim=1)  # [in, sum of outs], contiguous
    members, start = [], 0
    for name, layer in zip(module.fused_projections, layers):
        out = layer.weight.shape[0]
        layer.weight.data = fused[:, start:start + out].t()  # [out, in] view, column-major
        members.append((name, layer, layer.weight, layer.weight.data_ptr()))
        start += out
    module.__dict__[_FUSED] = (fused, members)


def _fusable(module: nn.Module) -> bool:
    layers = _projections(module)
    return (all(type(layer) is nn.Linear and layer.bias is None and _eligible(layer.weight) for layer in layers)
            and len({layer.weight.shape[1] for layer in layers}) == 1)


def use_decode_layout(model: nn.Module) -> nn.Module:
    """Fuse and store column-major, in place, the float32 CPU linear weights of
    model (see the module docstring); returns model.  Idempotent, and cheap once
    done (a few pointer checks per layer)."""
    # The new tensors must be ordinary ones even when called under inference_mode,
    # or a later training step could not use the weights.
    with torch.inference_mode(False), torch.no_grad():
        _use_decode_layout(model)
    return model


def _use_decode_layout(model: nn.Module):
    for module in model.modules():
        if getattr(module, "fused_projections", None) and fused_weight(module) is None and _fusable(module):
            _fuse(module)
    for module in model.modules():
        if isinstance(module, nn.Linear) and _eligible(module.weight) and module.weight.stride(0) != 1:
            module.weight.data = module.weight.data.t().contiguous().t()
