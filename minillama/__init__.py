"""minillama: a from-scratch mini-Llama for learning and measuring.

Public API:
    load_model(path, norm=None, device="cpu", dtype=None) -> Llama
    save_checkpoint(model, path, fmt=None)   # llama2.c .pt/.bin by extension; fmt "hf"/"meta": a directory
    load_tokenizer(path) -> tokenizer (sentencepiece or tiktoken)
    model(input_ids, attention_mask=None) -> (logits [B,T,V], hidden_states [B,T,dim])
    model.generate(input_ids, max_new_tokens, temperature=0.0, epsilon=None, eos_id=None) -> ids [B, T+new]
    PrefixModel(base, mode, length, ...), save_adapter, load_adapter, interpolate  (minillama.adapters)
"""
from .adapters import PrefixModel, interpolate, load_adapter, save_adapter
from .core.config import LlamaConfig, RopeScaling, Runtime
from .errors import MinillamaError
from .formats import load_model, save_checkpoint
from .core.model import Llama
from .tokenizer import load_tokenizer

__all__ = ["LlamaConfig", "RopeScaling", "Runtime", "Llama", "MinillamaError", "load_model", "load_tokenizer",
           "save_checkpoint", "PrefixModel", "save_adapter", "load_adapter", "interpolate"]
