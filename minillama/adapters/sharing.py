"""How a method changes the inside of blocks without changing the base: module copies that
share every tensor (adapters/llama_adapter.py, adapters/bottleneck.py).

The backbone runs `sharing_copy(base, layers=...)`, a second Llama object holding the base's
embeddings, norm and output, and blocks of which some are copies with a wrapped sublayer.
The base itself is never modified: several adapters (or none) can run on one base side by side.
"""
from __future__ import annotations

import copy

from torch import nn


def sharing_copy(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A second module object with the same tensors, settings and children as `module`, except
    `children` (name -> the replacing module); its table of children is its own, so replacing
    a child of the copy leaves `module` as it was."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    for name, child in children.items():
        setattr(clone, name, child)
    return clone
