"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update.

    y = x W^T + b + scaling * dropout(x) A^T B^T,    scaling = alpha / rank
    W: [out, in] frozen;  A: [rank, in] random;  B: [out, rank] zero

B starts at zero, so an injected model computes exactly what the base model
does until training moves B.  After training, `merge()` folds scaling * B A into
W, so inference costs the same as the base model; `unmerge()` takes it out again.

`inject_lora(model, targets, rank, alpha, dropout)` replaces the named
projections of every transformer block in place, reusing their weight tensors
(no copies), and freezes everything but the LoRA factors.  `LoraModel` is the
method's backbone (adapters/base.py): attach = inject, finalize = merge, and an
adapter file holds the A and B factors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterable, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MinillamaError
from ..flags import flag
from .base import AdaptedModel, AdapterConfig

# projection name -> the submodule of a TransformerBlock that holds it
TARGET_PARENTS = {"wq": "attention", "wk": "attention", "wv": "attention", "wo": "attention",
                  "w1": "feed_forward", "w2": "feed_forward", "w3": "feed_forward"}


@dataclass
class LoraConfig(AdapterConfig):
    """--option lora: rank-`rank` updates of `targets` in every block, scaled by alpha / rank."""

    method: ClassVar[str] = "lora"
    summary: ClassVar[str] = "LoRA adapters"
    task_lr: ClassVar[Dict[str, float]] = {"e2e": 3e-2}  # --task e2e: the lowest dev loss in bench/e2e_accuracy.py's sweep (docs/guide.md, E2E)
    rank: int = flag(4, "--lora_rank", help="default {default}")
    alpha: float = flag(1.0, "--lora_alpha", help="default {default}")
    dropout: float = flag(0.0, "--lora_dropout", help="default {default}")
    # Every projection of a block (attention and feed-forward), not only the LoRA paper's
    # wq, wv: at rank 4 the updates of wq, wv alone barely move a tiny model in the course's
    # 5 epochs (stories260K SST dev 0.286 at --lr 1e-3, all seven 0.327; README "SST defaults").
    targets: Tuple[str, ...] = flag(tuple(TARGET_PARENTS), "--lora_targets",
                                    help="comma-separated projections: wq,wk,wv,wo,w1,w2,w3 (default {default})")

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise MinillamaError(f"--lora_rank must be a positive integer, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise MinillamaError(f"--lora_dropout must be in [0, 1), got {self.dropout}")
        if not abs(self.alpha) < float("inf"):
            raise MinillamaError(f"--lora_alpha must be a finite number, got {self.alpha}")
        self.targets = tuple(parse_targets(",".join(self.targets) if not isinstance(self.targets, str)
                                           else self.targets))


class LoRALinear(nn.Linear):
    """An nn.Linear with a low-rank trainable update (see the module docstring).
    Being an nn.Linear, it loads/saves the base weight under the same name."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float = 1.0,
                 dropout: float = 0.0, bias: bool = False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank <= 0:
            raise MinillamaError(f"LoRA rank must be a positive integer, got {rank} (e.g. --lora_rank 4)")
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self):
        """A like nn.Linear's default init (kaiming-uniform, a=sqrt(5), as peft does), B = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha: float = 1.0, dropout: float = 0.0) -> "LoRALinear":
        """Wrap an existing layer: its weight (and bias) Parameters are shared, not copied."""
        weight = linear.weight
        # Build the shell on the meta device (no allocation), then adopt the real tensors.
        module = cls(linear.in_features, linear.out_features, rank, alpha, dropout,
                     bias=linear.bias is not None, device="meta", dtype=weight.dtype)
        module.weight = weight
        module.bias = linear.bias
        module.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, device=weight.device, dtype=weight.dtype))
        module.lora_B = nn.Parameter(torch.empty(linear.out_features, rank, device=weight.device, dtype=weight.dtype))
        module.reset_lora_parameters()
        return module

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


def parse_targets(text: str) -> List[str]:
    """'wq,wv' -> ['wq', 'wv'], checked against the projections a block has."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGET_PARENTS]
    if not targets or unknown:
        raise MinillamaError(f"--lora_targets: unknown projection(s) {unknown or text!r}; "
                             f"choose from {','.join(TARGET_PARENTS)}")
    return targets


def inject_lora(model: nn.Module, targets: Sequence[str] = ("wq", "wv"), rank: int = 4, alpha: float = 1.0,
                dropout: float = 0.0) -> List[LoRALinear]:
    """Replace `targets` in every block of model.layers by LoRALinear (in place),
    freeze every existing parameter and return the new modules (their A, B train)."""
    targets = parse_targets(",".join(targets))
    for p in model.parameters():
        p.requires_grad_(False)
    injected = []
    for block in model.layers:
        for name in targets:
            parent = getattr(block, TARGET_PARENTS[name])
            layer = getattr(parent, name)
            if isinstance(layer, LoRALinear):
                raise MinillamaError(f"LoRA already injected into {name}")
            lora = LoRALinear.from_linear(layer, rank, alpha, dropout)
            setattr(parent, name, lora)
            injected.append(lora)
    return injected


def lora_modules(model: nn.Module) -> List[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module):
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nn.Module):
    for m in lora_modules(model):
        m.unmerge()


def lora_parameter_count(config, targets: Iterable[str], rank: int) -> int:
    """Trainable LoRA parameters: n_layers * sum over targets of rank * (in + out).
    wq, wo: dim -> dim; wk, wv: dim -> kv_dim; w1, w3: dim -> hidden; w2: hidden -> dim."""
    shapes: Dict[str, tuple] = {
        "wq": (config.dim, config.dim), "wk": (config.dim, config.kv_dim), "wv": (config.dim, config.kv_dim),
        "wo": (config.dim, config.dim), "w1": (config.dim, config.hidden_dim),
        "w2": (config.hidden_dim, config.dim), "w3": (config.dim, config.hidden_dim)}
    return config.n_layers * sum(rank * sum(shapes[t]) for t in targets)


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
