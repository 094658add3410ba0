"""The prefix family's settings: P-tuning v2's and prefix tuning's (adapters/prefix.py), which
prompt tuning (adapters/prompt.py) shares: the prefix length, where it starts, the MLP's width,
with their flags, per-task defaults and checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Sequence, Set, Tuple

from ..errors import MinillamaError
from ..flags import Flag, flag
from .base import AdapterConfig
from .checks import check_count
from .prefix_init import INITS, check_init


@dataclass
class PrefixConfig(AdapterConfig):
    """The prefix family's shared settings: P virtual tokens, started at random,
    at random vocabulary tokens, or at a text (`init_text`, or token ids `init_ids`)."""

    method: ClassVar[str] = "ptuning2"
    option: ClassVar[str] = "prefix"
    tasks: ClassVar[Tuple[str, ...]] = ("classify", "mmlu", "e2e")
    summary: ClassVar[str] = "per-layer keys/values trained directly (P-tuning v2)"
    default_lr: ClassVar[float] = 1e-2  # a few thousand free parameters take far larger steps
    task_lr: ClassVar[Dict[str, float]] = {"e2e": 3e-1}  # --task e2e: the lowest dev loss in bench/e2e_accuracy.py's sweep (docs/guide.md, E2E)
    # Classification: 60 virtual tokens started at random vocabulary tokens' keys/values (at the
    # model's own scale; random ones at std 0.02 barely draw attention), the best of the SST runs
    # in RESULTS.md (dev 0.324 / 0.324 / 0.314 at seeds 0 / 1 / 2).
    task_settings: ClassVar[Dict[str, Dict[str, Any]]] = {"classify": {"length": 60, "init": "vocab"}}
    start_fields: ClassVar[Tuple[str, ...]] = ("init", "init_text", "init_ids")
    length: int = flag(10, "--prefix_length", help="virtual tokens (default {default})")
    init: str = flag("random", "--prefix_init", choices=INITS, help="where the prefix starts (default {default})")
    init_text: Optional[str] = flag(None, "--prefix_init_text", help="text whose tokens start the prefix")
    init_ids: Optional[Sequence[int]] = None

    def __post_init__(self):
        check_count(self.length, "--prefix_length", "a positive number of virtual tokens")
        check_init(self)

    def check_fits(self, context: int):
        """The virtual tokens must leave the input at least one position of the model's context."""
        if not self.length < context:
            raise MinillamaError(f"--prefix_length must be below the model's context of {context}, got {self.length}")


@dataclass
class PrefixTuningConfig(PrefixConfig):
    """Prefix tuning: the prefix through a `hidden`-wide MLP (the paper's 512)."""

    method: ClassVar[str] = "prefix"
    summary: ClassVar[str] = "per-layer keys/values via an MLP (Li & Liang)"
    switches: ClassVar[Tuple[Flag, ...]] = (
        Flag("--no_reparam", "train the keys/values directly (that is P-tuning v2's model)", None,
             (("action", "store_true"),)),)
    task_lr: ClassVar[Dict[str, float]] = {"e2e": 3e-3}  # --task e2e: the lowest dev loss in bench/e2e_accuracy.py's sweep (docs/guide.md, E2E)
    task_settings: ClassVar[Dict[str, Dict[str, Any]]] = {}
    hidden: int = flag(512, "--prefix_hidden", help="width of the reparameterization MLP (default {default})")

    def __post_init__(self):
        super().__post_init__()
        check_count(self.hidden, "--prefix_hidden", "a positive width")

    @classmethod
    def from_flags(cls, settings: Dict[str, Any], switches: Set[str]) -> PrefixConfig:
        """--no_reparam: keys/values without the MLP, which is P-tuning v2's model."""
        if "no_reparam" not in switches:
            return cls(**settings)
        print("--no_reparam: prefix keys/values trained directly, which is --prefix_mode ptuning2")
        return PrefixConfig(**{k: v for k, v in settings.items() if k != "hidden"})
