"""Prompt tuning (adapters/prompt.py) in Hugging Face PEFT's format, peft_type PROMPT_TUNING,
both ways: prompt_embeddings [P, dim], the trained input embeddings as they are."""
from __future__ import annotations

from .peft_convert import PeftConverter, check_decoder_only, field, tensor
from .prompt import PromptTuningConfig


class PromptPeft(PeftConverter):
    peft_type = "PROMPT_TUNING"

    def to_peft(self, adapter):
        c = adapter.config
        return {"peft_type": self.peft_type, "num_virtual_tokens": adapter.length, "token_dim": c.dim,
                "num_layers": c.n_layers, "num_attention_heads": c.n_heads, "num_transformer_submodules": 1,
                "prompt_tuning_init": "RANDOM"}, {"prompt_embeddings": adapter.prompt}

    def from_peft(self, cfg, tensors, base, where):
        P = field(cfg, "num_virtual_tokens", where)
        check_decoder_only(cfg, where, "prompt")
        prompt = tensor(tensors, "prompt_embeddings", (P, base.config.dim), where, base, from_config=1)
        return PromptTuningConfig(length=P), {"prefix": prompt}
