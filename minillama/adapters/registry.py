"""The methods by name: one line each.  attach(model, cfg) builds cfg's method on model."""
from __future__ import annotations

from typing import Dict, Type

from torch import nn

from .base import AdaptedModel, AdapterConfig
from .bottleneck import Bottleneck, BottleneckConfig
from .full import FullConfig, FullFinetune
from .llama_adapter import LlamaAdapter, LlamaAdapterConfig
from .lora import LoraConfig, LoraModel
from .prefix import PrefixConfig, PrefixTuning, PrefixTuningConfig, PTuningV2
from .probe import Probe, ProbeConfig
from .prompt import PromptTuning, PromptTuningConfig

# method name -> (config class, backbone class)
REGISTRY: Dict[str, tuple] = {
    "finetune": (FullConfig, FullFinetune),
    "lora": (LoraConfig, LoraModel),
    "prefix": (PrefixTuningConfig, PrefixTuning),
    "ptuning2": (PrefixConfig, PTuningV2),
    "prompt": (PromptTuningConfig, PromptTuning),
    "adapter": (LlamaAdapterConfig, LlamaAdapter),
    "bottleneck": (BottleneckConfig, Bottleneck),
    "probe": (ProbeConfig, Probe),
}
METHODS: Dict[str, Type[AdaptedModel]] = {name: model for name, (_, model) in REGISTRY.items()}


def make_config(method: str, **settings) -> AdapterConfig:
    """The config of `method` from keyword settings (unknown keys are an error)."""
    return REGISTRY[method][0](**settings)


def attach(model: nn.Module, cfg: AdapterConfig, tokenizer=None) -> AdaptedModel:
    """Freeze `model` and add what cfg's method trains: the backbone to train."""
    return METHODS[cfg.method](model, cfg, tokenizer)
