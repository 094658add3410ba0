"""Adaptation methods: each is a config (what to build) + a backbone class (adapters/base.py).

Add a method: write adapters/<name>.py with a config subclassing AdapterConfig and a
backbone subclassing AdaptedModel, then add one line to REGISTRY in adapters/registry.py.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .base import AdaptedModel, AdapterConfig
from .bottleneck import Bottleneck, BottleneckConfig
from .full import FullConfig, FullFinetune
from .io import interpolate, load_adapter, load_adapters, parameter_counts, save_adapter
from .registry import METHODS, REGISTRY, attach, make_config
from .llama_adapter import LlamaAdapter, LlamaAdapterConfig
from .lora import LoraConfig, LoraModel, LoRALinear, inject_lora, merge_lora, unmerge_lora
from .prefix import PrefixConfig, PrefixTuning, PrefixTuningConfig, PTuningV2
from .probe import Probe, ProbeConfig
from .prompt import PromptTuning, PromptTuningConfig


def PrefixModel(base: nn.Module, mode: str = "prefix", length: int = 10, *, reparam: Optional[bool] = None,
                prefix_hidden: int = 512, init: str = "random", init_text: Optional[str] = None,
                tokenizer=None, init_ids=None) -> AdaptedModel:
    """The prefix family by mode, as in earlier releases: "prefix" (with the MLP unless
    reparam=False, which is P-tuning v2's model), "ptuning2" or "prompt"."""
    from ..errors import MinillamaError
    if mode not in ("prefix", "ptuning2", "prompt"):
        raise MinillamaError(f"prefix mode must be prefix, ptuning2 or prompt, got {mode!r}")
    if reparam and mode != "prefix":
        raise MinillamaError(f"the MLP reparameterization belongs to mode 'prefix', not {mode!r}")
    common = dict(length=length, init=init, init_text=init_text, init_ids=init_ids)
    if mode == "prefix" and reparam is not False:
        return attach(base, PrefixTuningConfig(hidden=prefix_hidden, **common), tokenizer)
    cfg = PromptTuningConfig(**common) if mode == "prompt" else PrefixConfig(**common)
    return attach(base, cfg, tokenizer)


__all__ = ["AdaptedModel", "AdapterConfig", "Bottleneck", "BottleneckConfig", "LlamaAdapter", "LlamaAdapterConfig", "LoraConfig", "LoraModel", "LoRALinear", "PrefixConfig",
           "PrefixTuningConfig", "PromptTuningConfig", "PrefixTuning", "PTuningV2", "PromptTuning", "PrefixModel",
           "REGISTRY", "METHODS", "attach", "make_config", "inject_lora", "merge_lora", "unmerge_lora",
           "save_adapter", "load_adapter", "load_adapters", "interpolate", "FullConfig", "FullFinetune", "parameter_counts",
           "Probe", "ProbeConfig"]
