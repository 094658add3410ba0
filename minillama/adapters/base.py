"""What every adaptation method shares: a config and an adapted backbone.

A method is one module in this package with
- a config dataclass (its settings, each default stated once, checked in
  `__post_init__` with a one-line MinillamaError), subclassing `AdapterConfig`;
- a backbone class, subclassing `AdaptedModel`, built as `Backbone(base, cfg, tokenizer)`
  ("attach"): it freezes the base and adds what trains;
and one line in `adapters/registry.py`'s registry.

What trains is what `attach` left with requires_grad (`trainable_parameters`); after
training `finalize()` makes the result cheap to use (LoRA merges, prefix tuning folds
its MLP away); `adapter_tensors()` / `load_adapter_tensors()` are what an adapter file
holds (`adapters/io.py` writes and reads them, with the base-identity checks).

A backbone is what the tasks and heads call:
    forward(input_ids [B, T], attention_mask [B, T], *, cache=None, last_only=False)
        -> (logits [B, T, V], hidden [B, T, dim])   ([B, 1, ...] when last_only)
plus `config` (the base's architecture), `input_room` (positions left for input),
`new_cache`, `embed` and `generate`, exactly like the plain Llama.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Dict, Set, Tuple

import torch
from torch import nn

from ..core.attention import KVCache
from ..flags import Flag


@dataclass
class AdapterConfig:
    """Base of every method's config.  `method` is the registry name; `default_lr` the
    learning rate a run uses when none is given (few free parameters take larger steps), and
    `task_lr` / `task_settings` what a task (classify, e2e, mmlu) uses instead: the one place
    a method's per-task defaults are stated (the flags given still win)."""

    method: ClassVar[str] = ""
    option: ClassVar[str] = ""   # the run_llama.py --option that trains it ("": --option <method>)
    summary: ClassVar[str] = ""  # what it is, in a few words (--help)
    output_word: ClassVar[str] = ""  # its option in default output names ("": the option)
    has_adapter_file: ClassVar[bool] = True  # what trains fits an adapter file (save_adapter)
    default_lr: ClassVar[float] = 2e-5
    task_lr: ClassVar[Dict[str, float]] = {}
    task_settings: ClassVar[Dict[str, Dict[str, Any]]] = {}
    start_fields: ClassVar[Tuple[str, ...]] = ()  # settings of where training starts: a loaded adapter skips them
    tasks: ClassVar[Tuple[str, ...]] = ("classify", "e2e")  # the --task values it trains on
    switches: ClassVar[Tuple[Flag, ...]] = ()  # flags that choose the method rather than set a field

    @classmethod
    def trained_by(cls) -> str:
        return cls.option or cls.method

    @classmethod
    def from_flags(cls, settings: Dict[str, Any], switches: Set[str]) -> "AdapterConfig":
        """The config a command line asks for: its fields' `settings` and the `switches` given."""
        return cls(**settings)

    @classmethod
    def lr_for(cls, task: str) -> float:
        return cls.task_lr.get(task, cls.default_lr)

    def to_dict(self) -> dict:
        return asdict(self)


class AdaptedModel(nn.Module):
    """A frozen base Llama plus what one method adds; a drop-in backbone (see module doc).
    Subclasses override `forward` and the adapter-file pair as they need."""

    method: ClassVar[str] = ""
    virtual_tokens = 0  # positions the adapter itself occupies before the input (prefixes)
    mixes_per_row = False  # its rows can share a batch with other adapters' rows (adapters/multi.py)

    def __init__(self, base: nn.Module, cfg: AdapterConfig):
        super().__init__()
        self.base, self.cfg = base.requires_grad_(False), cfg
        self.config = base.config
        self.base_parameters = base.num_parameters()  # before the method adds any (LoRA adds into base)

    # -- the backbone interface ----------------------------------------------------------
    @property
    def input_room(self) -> int:
        """Positions left for input tokens."""
        return self.base.input_room - self.virtual_tokens

    @property
    def cache_type(self) -> type:
        """The base's KV cache class (prefix adapters build their caches with it)."""
        return self.base.cache_type

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        return self.base.new_cache(batch, capacity + self.virtual_tokens)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embed(input_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """As Llama.generate, through this backbone."""
        from ..core.sampling import generate
        return generate(self, input_ids, max_new_tokens, **kwargs)

    # -- training and files ----------------------------------------------------------------
    def trainable_parameters(self) -> Dict[str, nn.Parameter]:
        """What trains: the parameters attach left trainable (the base is frozen)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def describe(self) -> str:
        """What trains, in words (the run's first line about its method)."""
        return self.method

    def finalize(self) -> "AdaptedModel":
        """After training: make inference cheap (default: nothing to do)."""
        return self

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        """The tensors an adapter file holds (after finalize)."""
        raise NotImplementedError

    def load_adapter_tensors(self, tensors: Dict[str, torch.Tensor]):
        """Copy saved tensors into this backbone (shapes already checked by io.py)."""
        with torch.no_grad():
            for name, target in self.expected_tensors().items():
                target.copy_(tensors[name].to(target.device, target.dtype))

    def expected_tensors(self) -> Dict[str, torch.Tensor]:
        """name -> the live tensor a saved one is copied into (for shape checks and loading)."""
        return self.adapter_tensors()
