"""The methods by name: one line each.  attach(model, cfg) builds cfg's method on model."""
from __future__ import annotations

from typing import Dict, Tuple, Type

from torch import nn

from .base import AdaptedModel, AdapterConfig
from .bottleneck import Bottleneck, BottleneckConfig
from .full import FullConfig, FullFinetune
from .llama_adapter import LlamaAdapter, LlamaAdapterConfig
from .lora import LoraConfig, LoraModel
from .prefix import PrefixConfig, PrefixTuning, PrefixTuningConfig, PTuningV2
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
}
METHODS: Dict[str, Type[AdaptedModel]] = {name: model for name, (_, model) in REGISTRY.items()}
# The word of each --option in default output file names (sst-dev-finetuning-output.txt);
# --option prompt trains no method.
OUTPUT_WORDS: Dict[str, str] = {"prompt": "prompting", **{config.trained_by(): config.output_word or config.trained_by()
                                                          for config, _ in REGISTRY.values()}}


def trainers(task: str) -> Tuple[str, ...]:
    """The --option values whose method trains on `task` (the configs' `tasks`)."""
    return tuple(dict.fromkeys(config.trained_by() for config, _ in REGISTRY.values() if task in config.tasks))


def make_config(method: str, **settings) -> AdapterConfig:
    """The config of `method` from keyword settings (unknown keys are an error)."""
    return REGISTRY[method][0](**settings)


def attach(model: nn.Module, cfg: AdapterConfig, tokenizer=None) -> AdaptedModel:
    """Freeze `model` and add what cfg's method trains: the backbone to train."""
    return METHODS[cfg.method](model, cfg, tokenizer)
