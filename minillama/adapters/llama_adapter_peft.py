"""LLaMA-Adapter (adapters/llama_adapter.py) in Hugging Face PEFT's format, peft_type
ADAPTION_PROMPT, both ways:

    base_model.model.model.layers.{i}.self_attn.adaption_prompt [1, P, dim]
    ... .adaption_gate [1]   (the top adapter_layers layers)

The prompt lives in the hidden space (its keys come from the block's own k_proj), so no
row permutation applies.  PEFT has one plain gate per layer: the paper's per-head tanh
gate (`gate="tanh"`) has no PEFT format.
"""
from __future__ import annotations

import re

from ..errors import MinillamaError
from .llama_adapter_config import LlamaAdapterConfig
from .peft_convert import CONFIG_FILE, PEFT_PREFIX, WEIGHTS_FILE, PeftConverter, field, other_base, tensor

ADAPTION_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.self_attn\.adaption_(prompt|gate)$")


class AdaptionPromptPeft(PeftConverter):
    peft_type = "ADAPTION_PROMPT"

    def check_exportable(self, config):
        if config.get("gate", "scalar") != "scalar":
            raise MinillamaError(f"--export_peft: PEFT's AdaptionPrompt has one plain gate per layer; this adapter "
                                 f"has --adapter_gate {config['gate']}: train with --adapter_gate scalar to export it")

    def to_peft(self, adapter):
        tensors = {}
        for i, attn in adapter.prompted().items():
            tensors[f"{PEFT_PREFIX}model.layers.{i}.self_attn.adaption_prompt"] = attn.prompt[None]
            tensors[f"{PEFT_PREFIX}model.layers.{i}.self_attn.adaption_gate"] = attn.gate
        return {"peft_type": self.peft_type, "adapter_len": adapter.length, "adapter_layers": adapter.cfg.layers,
                "target_modules": "self_attn"}, tensors

    def from_peft(self, cfg, tensors, base, where):
        c = base.config
        P, layers = field(cfg, "adapter_len", where), field(cfg, "adapter_layers", where)
        if cfg.get("target_modules", "self_attn") != "self_attn":
            raise MinillamaError(f"{where}/{CONFIG_FILE}: AdaptionPrompt on {cfg['target_modules']!r}: minillama "
                                 "adapts the attention (self_attn) of Llama blocks")
        if layers > c.n_layers:
            raise MinillamaError(f"{where}/{CONFIG_FILE}: adapter_layers {layers} is above this model's {c.n_layers} "
                                 "layers: load it onto the base it was trained on")
        by_layer = {}
        for name in tensors:
            m = ADAPTION_KEY.match(name)
            if not m:
                raise MinillamaError(f"{where}/{WEIGHTS_FILE}: tensor {name!r} is not an adaption prompt or gate")
            by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = name
        out = {}
        for i in range(c.n_layers - layers, c.n_layers):
            names = by_layer.get(i, {})
            if set(names) != {"prompt", "gate"}:
                raise other_base(where, f"its prompts sit in layers {sorted(by_layer)}",
                                 f"the top {layers} layers {list(range(c.n_layers - layers, c.n_layers))}", base)
            out[f"layers.{i}.prompt"] = tensor(tensors, names["prompt"], (1, P, c.dim), where, base, from_config=2)[0]
            out[f"layers.{i}.gate"] = tensor(tensors, names["gate"], (1,), where, base)
        return LlamaAdapterConfig(length=P, layers=layers), out
