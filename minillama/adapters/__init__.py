"""Adaptation methods: each is a config (what to build) + a backbone class (adapters/base.py).

Add a method: write adapters/<name>.py with a config subclassing AdapterConfig (in it, or
beside it in adapters/<name>_config.py) and a backbone subclassing AdaptedModel, then add one
line to REGISTRY in adapters/registry.py
(naming its PEFT converter, adapters/<name>_peft.py, if PEFT has a format for it).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .base import AdaptedModel, AdapterConfig
from .bottleneck import Bottleneck, BottleneckConfig
from .full import FullConfig, FullFinetune
from .io import interpolate, load_adapter, load_adapters, parameter_counts, save_adapter
from .registry import METHODS, REGISTRY, attach, make_config
from .llama_adapter import LlamaAdapter
from .llama_adapter_config import LlamaAdapterConfig
from .lora_config import LoraConfig
from .lora import LoraModel, LoRALinear, inject_lora, merge_lora, unmerge_lora
from .prefix import PrefixTuning, PTuningV2
from .prefix_config import PrefixConfig, PrefixTuningConfig
from .probe import Probe, ProbeConfig
from .prompt import PromptTuning, PromptTuningConfig


def PrefixModel(base: nn.Module, mode: str = "prefix", length: int = 10, *, reparam: Optional[bool] = None,
                prefix_hidden: Optional[int] = None, tokenizer=None, **init) -> AdaptedModel:
    """`attach` by the earlier releases' name: the prefix family by mode ("prefix"; with reparam=False,
    P-tuning v2's "ptuning2"; "prompt"); `init`: PrefixConfig's init, init_text, init_ids."""
    method = "ptuning2" if mode == "prefix" and reparam is False else mode
    mlp = {"hidden": prefix_hidden} if method == "prefix" and prefix_hidden else {}
    return attach(base, make_config(method, length=length, **mlp, **init), tokenizer)


__all__ = ["AdaptedModel", "AdapterConfig", "Bottleneck", "BottleneckConfig", "LlamaAdapter", "LlamaAdapterConfig", "LoraConfig", "LoraModel", "LoRALinear", "PrefixConfig",
           "PrefixTuningConfig", "PromptTuningConfig", "PrefixTuning", "PTuningV2", "PromptTuning", "PrefixModel",
           "REGISTRY", "METHODS", "attach", "make_config", "inject_lora", "merge_lora", "unmerge_lora",
           "save_adapter", "load_adapter", "load_adapters", "interpolate", "FullConfig", "FullFinetune", "parameter_counts",
           "Probe", "ProbeConfig"]
