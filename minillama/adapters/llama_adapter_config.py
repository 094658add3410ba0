"""LLaMA-Adapter's settings (`--prefix_mode adapter`, adapters/llama_adapter.py): the prompt
length, how many top layers get one, the gate's form, with their flags, defaults and checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from ..errors import MinillamaError
from ..flags import flag, same_flag
from .base import AdapterConfig
from .checks import check_choice, check_count

GATES = ("scalar", "tanh")  # scalar: PEFT's one gate per layer, as is; tanh: the paper's tanh(g) per head
SKIPPED_LAYERS = 2  # litgpt's adapter_start_layer: by default every layer but the first two is adapted


@dataclass
class LlamaAdapterConfig(AdapterConfig):
    """--prefix_mode adapter: a `length`-vector prompt in the top `layers` blocks
    (None: all but the first two, as litgpt; at least one)."""

    method: ClassVar[str] = "adapter"
    option: ClassVar[str] = "prefix"
    tasks: ClassVar[Tuple[str, ...]] = ("classify", "mmlu", "e2e")
    summary: ClassVar[str] = "LLaMA-Adapter, a zero-gated prompt read in a separate softmax (Zhang et al.)"
    default_lr: ClassVar[float] = 1e-2  # the paper's 9e-3: few free parameters, starting at zero effect
    length: int = same_flag(10, "--prefix_length")
    layers: Optional[int] = flag(None, "--adapter_layers", type=int,
                                 help="--prefix_mode adapter: how many top layers get a prompt (default: all but "
                                      "the first two)")
    gate: str = flag("scalar", "--adapter_gate", choices=GATES,
                     help="--prefix_mode adapter: scalar (default): one gate per layer, as PEFT; tanh: one "
                          "tanh(gate) per head, as the paper (PEFT cannot load it)")

    def __post_init__(self):
        check_count(self.length, "--prefix_length", "a positive number of prompt vectors")
        if self.layers is not None:
            check_count(self.layers, "--adapter_layers", "a positive number of layers")
        check_choice(self.gate, GATES, "--adapter_gate")

    def layer_count(self, n_layers: int) -> int:
        """How many top layers get a prompt, checked against the model's n_layers."""
        if self.layers is None:
            return max(n_layers - SKIPPED_LAYERS, 1)
        if self.layers > n_layers:
            raise MinillamaError(f"--adapter_layers {self.layers} is above the model's {n_layers} layers: "
                                 f"choose 1..{n_layers}")
        return self.layers
