"""LoRA's settings (`--option lora`): the rank, scale, dropout and projections adapters/lora.py
updates, with their flags, defaults and checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Tuple

from ..errors import MinillamaError
from ..flags import flag
from .base import AdapterConfig
from .checks import check_count

# projection name -> the submodule of a TransformerBlock that holds it
TARGET_PARENTS = {"wq": "attention", "wk": "attention", "wv": "attention", "wo": "attention",
                  "w1": "feed_forward", "w2": "feed_forward", "w3": "feed_forward"}


def parse_targets(targets) -> List[str]:
    """'wq,wv' (or its names) -> ['wq', 'wv'], checked against the projections a block has."""
    names = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    unknown = [t for t in names if t not in TARGET_PARENTS]
    if not names or unknown:
        raise MinillamaError(f"--lora_targets: unknown projection(s) {unknown or targets!r}; "
                             f"choose from {','.join(TARGET_PARENTS)}")
    return names


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
        check_count(self.rank, "--lora_rank", "a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise MinillamaError(f"--lora_dropout must be in [0, 1), got {self.dropout}")
        if not abs(self.alpha) < float("inf"):
            raise MinillamaError(f"--lora_alpha must be a finite number, got {self.alpha}")
        self.targets = tuple(parse_targets(self.targets))
