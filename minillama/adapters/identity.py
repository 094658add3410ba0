"""Which base model an adapter belongs to, and the checks a saved adapter passes before use.

An adapter file records its base's `base_identity`: the shape keys (a different shape cannot
load: refused), the whole architecture's hash (another norm or RoPE: warned, naming the
setting), and a hash of the embeddings (other weights of the same shape: warned).  Its
tensors must be finite.  Both minillama's files (io.py) and PEFT directories
(peft_format.py) are checked here.
"""
from __future__ import annotations

import hashlib
import json
from typing import Dict, Optional

import torch
from torch import nn

from ..errors import MinillamaError, warn

SHAPE_KEYS = ("n_layers", "n_kv_heads", "head_dim", "dim", "vocab_size")

def _sha16(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _architecture(base: nn.Module) -> dict:
    """The config minus max_seq_len (a shorter context is the same model)."""
    return {k: v for k, v in base.config.to_dict().items() if k != "max_seq_len"}


def base_identity(base: nn.Module) -> Dict[str, object]:
    """Shape, a hash of the architecture and a fingerprint of the embeddings (bf16 bits of
    256 sampled rows, so fp32 and bf16 copies of one checkpoint agree)."""
    c = base.config
    w = base.tok_embeddings.weight.detach()
    rows = w[:: max(1, w.shape[0] // 256)].to("cpu", torch.bfloat16).view(torch.int16)
    return {**{k: getattr(c, k) for k in SHAPE_KEYS}, "config_sha256": _sha16(_architecture(base)),
            "embedding_fingerprint": hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16],
            "architecture": _architecture(base)}  # kept in full so a mismatch can name the setting


def _same_architecture(want_sha: str, base: nn.Module) -> bool:
    """The previous release hashed the config with a 'family' field ('llama2c' or 'llama3')."""
    arch = _architecture(base)
    return want_sha in {_sha16(arch)} | {_sha16({**arch, "family": f}) for f in ("llama2c", "llama3")}


def check_base(meta: dict, base: nn.Module, path: str, where: Optional[str] = None):
    """Refuse another shape; warn for the same shape with other weights.  `where` names the
    file in messages (default <path>.json)."""
    want, have = meta["base"], base_identity(base)
    if any(want.get(k) != have[k] for k in SHAPE_KEYS):
        shape = lambda d: ", ".join(f"{k}={d.get(k)}" for k in SHAPE_KEYS)  # noqa: E731
        raise MinillamaError(f"{where or path + '.json'}: adapter made for a model with {shape(want)}, but this model has "
                             f"{shape(have)}: load it onto the base model it was trained with")
    same = _same_architecture(want.get("config_sha256"), base) and \
        want.get("embedding_fingerprint") == have["embedding_fingerprint"]
    if not same:
        warn(f"{path}: adapter was trained on a different base model of the same shape "
                      f"({base_difference(want, have)})")


def base_difference(want: dict, have: dict) -> str:
    """What differs between the saved base identity and this model's, in words."""
    saved = want.get("architecture")
    if saved is None:  # files of earlier releases keep only the hash
        return "other settings or weights; this file records no settings to compare"
    differ = [f"{k} {saved.get(k)!r} there, {have['architecture'].get(k)!r} here"
              for k in sorted(set(saved) | set(have["architecture"])) if saved.get(k) != have["architecture"].get(k)]
    if differ:
        return "settings differ: " + "; ".join(differ)
    return "other weights: the embeddings differ"


def check_finite(tensors: Dict[str, torch.Tensor], where: str):
    """A tensor holding NaN or inf would make every answer NaN: refused, naming it."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise MinillamaError(f"{where}: tensor {name!r} holds {bad} non-finite values (NaN or inf) of "
                                 f"{t.numel()}: the adapter is damaged (or its training diverged); re-train or "
                                 "re-copy it")
