"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update.

    y = x W^T + b + scaling * dropout(x) A^T B^T,    scaling = alpha / rank
    W: [out, in] frozen;  A: [rank, in] random;  B: [out, rank] zero

B starts at zero, so an injected model computes exactly what the base model
does until training moves B.  After training, `merge()` folds scaling * B A into
W, so inference costs the same as the base model; `unmerge()` takes it out again.

`inject_lora` wraps the named projections of every block in place, reusing their
weight tensors (no copies).  `LoraModel` is the method's backbone (adapters/base.py):
attach = inject, finalize = merge, and an adapter file holds the A and B factors.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MinillamaError
from .base import AdaptedModel
from .checks import check_count
from .lora_config import TARGET_PARENTS, LoraConfig, parse_targets


class LoRALinear(nn.Linear):
    """An existing nn.Linear's weight (and bias), shared, not copied, plus the low-rank update
    of the module docstring.  Being an nn.Linear, it loads/saves the base weight under the same name."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float = 1.0, dropout: float = 0.0):
        check_count(rank, "LoRA rank", "a positive integer (e.g. --lora_rank 4)")
        w = linear.weight
        # The nn.Linear shell on the meta device (no allocation), then the layer's own tensors.
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = w, linear.bias
        self.rank, self.alpha, self.scaling, self.merged = rank, alpha, alpha / rank, False
        self.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's own init (and peft's)
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, device=w.device, dtype=w.dtype))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A: [out, in], the update merge() adds to the weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] -> [..., out]"""
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        # x A^T B^T in two thin matmuls: O(rank * (in + out)) per token, never the [out, in] product.
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    @torch.no_grad()
    def merge(self):
        """Fold the update into the weight: inference at the base model's cost."""
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def inject_lora(model: nn.Module, targets: Sequence[str] = ("wq", "wv"), rank: int = 4, alpha: float = 1.0,
                dropout: float = 0.0) -> List[LoRALinear]:
    """Replace `targets` in every block of model.layers by LoRALinear (in place),
    freeze every existing parameter and return the new modules (their A, B train)."""
    targets = parse_targets(targets)
    model.requires_grad_(False)
    injected = []
    for block in model.layers:
        for name in targets:
            parent = getattr(block, TARGET_PARENTS[name])
            if isinstance(getattr(parent, name), LoRALinear):
                raise MinillamaError(f"LoRA already injected into {name}")
            injected.append(LoRALinear(getattr(parent, name), rank, alpha, dropout))
            setattr(parent, name, injected[-1])
    return injected


def lora_modules(model: nn.Module) -> List[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module):
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nn.Module):
    for m in lora_modules(model):
        m.unmerge()


class LoraModel(AdaptedModel):
    """The LoRA method's backbone: the base with LoRALinear layers injected in place."""

    method = "lora"

    def __init__(self, base: nn.Module, cfg: LoraConfig, tokenizer=None):
        super().__init__(base, cfg)
        self.injected = inject_lora(base, cfg.targets, cfg.rank, cfg.alpha, cfg.dropout)

    def describe(self) -> str:
        c = self.cfg
        return f"LoRA: rank {c.rank}, alpha {c.alpha}, targets {','.join(c.targets)} in {self.base.config.n_layers} layers"

    def finalize(self) -> "LoraModel":
        """Merge scaling * B A into the weights: prediction at the base model's cost."""
        merge_lora(self.base)
        return self

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        """The factors by module name, e.g. layers.0.attention.wq.lora_A [rank, in]."""
        return {f"{name}.{part}": getattr(m, part) for name, m in self.base.named_modules()
                if isinstance(m, LoRALinear) for part in ("lora_A", "lora_B")}

    def load_adapter_tensors(self, tensors: Dict[str, torch.Tensor]):
        super().load_adapter_tensors(tensors)
        self.finalize()
