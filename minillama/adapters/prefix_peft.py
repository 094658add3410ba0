"""Prefix tuning and P-tuning v2 (adapters/prefix.py) in Hugging Face PEFT's format,
peft_type PREFIX_TUNING, both ways:

    prompt_embeddings [P, L * 2 * KV * hd]   the folded prefix as PEFT's past key values
                                             (prefix_projection false: nothing left to fold)

so a prefix-tuning adapter travels folded and reads back as P-tuning v2 (the same keys and
values).  The keys are already rotated, in the coordinates HF's cache holds: each head's hd
coordinates are permuted as formats/hf.py permutes q/k rows for HF's "rotate half" RoPE;
values are not.  GQA: a prefix keeps n_kv_heads keys per layer (PEFT's token_dim = KV * hd,
num_attention_heads = KV).  Shapes: L layers, KV kv heads, P prefix length, hd head_dim.
"""
from __future__ import annotations

import torch

from ..formats.hf import hf_to_meta_qk, meta_to_hf_qk
from .peft_convert import CONFIG_FILE, PeftConverter, check_decoder_only, field, other_base, tensor
from .prefix_config import PrefixConfig


def keys_to_hf(keys: torch.Tensor, to_hf: bool = True) -> torch.Tensor:
    """Prefix keys [L, KV, P, hd] between minillama's adjacent-pair coordinates and HF's
    halves: the row permutation of formats/hf.py applied to each head's hd coordinates."""
    L, KV, P, hd = keys.shape
    rows = keys.permute(0, 1, 3, 2).reshape(L * KV * hd, P)  # one "head" of hd rows per (layer, kv head)
    permuted = (meta_to_hf_qk if to_hf else hf_to_meta_qk)(rows, L * KV)
    return permuted.view(L, KV, hd, P).permute(0, 1, 3, 2)


def prefix_to_flat(kv: torch.Tensor) -> torch.Tensor:
    """minillama's prefix [L, 2, KV, P, hd] -> PEFT's prompt_embeddings [P, L * 2 * KV * hd]."""
    kv = torch.stack([keys_to_hf(kv[:, 0]), kv[:, 1]], dim=1)
    return kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)


def flat_to_prefix(flat: torch.Tensor, config) -> torch.Tensor:
    """PEFT's prompt_embeddings [P, L * 2 * KV * hd] -> minillama's prefix [L, 2, KV, P, hd]."""
    c = config
    kv = flat.reshape(flat.shape[0], c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
    return torch.stack([keys_to_hf(kv[:, 0], to_hf=False), kv[:, 1]], dim=1)


class PrefixPeft(PeftConverter):
    peft_type = "PREFIX_TUNING"

    def to_peft(self, adapter):
        c = adapter.config
        flat = prefix_to_flat(adapter.prefix_tensor())  # prefix tuning: its MLP's value, folded
        return {"peft_type": self.peft_type, "num_virtual_tokens": adapter.length, "num_layers": c.n_layers,
                "token_dim": c.kv_dim, "num_attention_heads": c.n_kv_heads, "num_transformer_submodules": 1,
                "prefix_projection": False, "encoder_hidden_size": c.dim}, {"prompt_embeddings": flat}

    def from_peft(self, cfg, tensors, base, where):
        c, P = base.config, field(cfg, "num_virtual_tokens", where)
        for key, want in (("num_layers", c.n_layers), ("token_dim", c.kv_dim), ("num_attention_heads", c.n_kv_heads)):
            if cfg.get(key) is not None and cfg[key] != want:
                raise other_base(where, f"{CONFIG_FILE} has {key} {cfg[key]}", f"{key} {want}", base)
        check_decoder_only(cfg, where, "prefix")
        flat = tensor(tensors, "prompt_embeddings", (P, c.n_layers * 2 * c.kv_dim), where, base, from_config=1)
        return PrefixConfig(length=P), {"prefix": flat_to_prefix(flat, c)}
