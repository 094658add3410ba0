"""The methods by name: one line each.  attach(model, cfg) builds cfg's method on model."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple, Type

from torch import nn

from ..errors import MinillamaError
from .base import AdaptedModel, AdapterConfig
from .bottleneck import Bottleneck, BottleneckConfig
from .full import FullConfig, FullFinetune
from .llama_adapter import LlamaAdapter
from .llama_adapter_config import LlamaAdapterConfig
from .llama_adapter_peft import AdaptionPromptPeft
from .lora import LoraModel
from .lora_config import LoraConfig
from .lora_peft import LoraPeft
from .peft_convert import PeftConverter
from .prefix import PrefixTuning, PTuningV2
from .prefix_config import PrefixConfig, PrefixTuningConfig
from .prefix_peft import PrefixPeft
from .probe import Probe, ProbeConfig
from .prompt import PromptTuning, PromptTuningConfig
from .prompt_peft import PromptPeft


class Method(NamedTuple):
    config: Type[AdapterConfig]  # its settings
    model: Type[AdaptedModel]  # its backbone
    peft: Optional[PeftConverter] = None  # its Hugging Face PEFT format (adapters/<method>_peft.py), if PEFT has one


REGISTRY: Dict[str, Method] = {
    "finetune": Method(FullConfig, FullFinetune),
    "lora": Method(LoraConfig, LoraModel, peft=LoraPeft()),
    "prefix": Method(PrefixTuningConfig, PrefixTuning, peft=PrefixPeft()),  # exported folded: read back as ptuning2
    "ptuning2": Method(PrefixConfig, PTuningV2, peft=PrefixPeft()),
    "prompt": Method(PromptTuningConfig, PromptTuning, peft=PromptPeft()),
    "adapter": Method(LlamaAdapterConfig, LlamaAdapter, peft=AdaptionPromptPeft()),
    "bottleneck": Method(BottleneckConfig, Bottleneck),
    "probe": Method(ProbeConfig, Probe),
}
METHODS: Dict[str, Type[AdaptedModel]] = {name: m.model for name, m in REGISTRY.items()}
# The word of each --option in default output file names (sst-dev-finetuning-output.txt);
# --option prompt trains no method.
OUTPUT_WORDS: Dict[str, str] = {"prompt": "prompting", **{m.config.trained_by(): m.config.output_word or
                                                          m.config.trained_by() for m in REGISTRY.values()}}


def trainers(task: str) -> Tuple[str, ...]:
    """The --option values whose method trains on `task` (the configs' `tasks`)."""
    return tuple(dict.fromkeys(m.config.trained_by() for m in REGISTRY.values() if task in m.config.tasks))


def make_config(method: str, **settings) -> AdapterConfig:
    """The config of `method` from keyword settings (unknown keys are an error)."""
    if method not in REGISTRY:
        raise MinillamaError(f"unknown adaptation method {method!r}: minillama has {', '.join(REGISTRY)}")
    return REGISTRY[method].config(**settings)


def attach(model: nn.Module, cfg: AdapterConfig, tokenizer=None) -> AdaptedModel:
    """Freeze `model` and add what cfg's method trains: the backbone to train."""
    return METHODS[cfg.method](model, cfg, tokenizer)
