"""What every weight format shares: safe torch files, JSON files, checked config
numbers, dtype casts and tied output weights.

Each reader turns a file into `(LlamaConfig, state_dict)` in minillama's names.
A checkpoint is input like any other: a missing field, a string where a number
belongs or a pickled function is the file's fault, reported as one
MinillamaError line that names the file, what is wrong and what to do.
"""
from __future__ import annotations

import json
import math
import pickle
import re
from typing import Dict, Optional

import torch

from ..core.config import LlamaConfig
from ..errors import MinillamaError
from ..files import atomic_write

FIX = "re-download or re-export the checkpoint"
REQUIRED = object()  # `number`'s default: the field must be present


# -- torch files (llama2.c .pt, Meta's consolidated.00.pth) ------------------------------------
def _first_line(e: Exception) -> str:
    """The error's first sentence, unless it is torch's advice about weights_only (never repeated)."""
    line = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
    return type(e).__name__ if "weights_only" in line else line


def load_torch_file(path: str):
    """torch.load without running any pickled code (weights_only=True: only tensors and
    plain values) and memory-mapped (mmap: tensors are read from disk when used).

    torch's own refusal message suggests turning the protection off; it is replaced by
    ours, which names the code the file wanted to run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        called = re.search(r"GLOBAL (\S+)", str(e))
        if called or "reduce" in str(e).lower():
            what = f" (it calls {called.group(1)})" if called else ""
            raise MinillamaError(f"{path}: refused: the file contains pickled code{what}, which minillama never "
                                 "runs; a checkpoint holds only tensors and plain values, get one from a trusted "
                                 "source") from None
        raise MinillamaError(f"{path}: unreadable checkpoint (truncated or corrupt: {_first_line(e)}); {FIX}") from None
    except Exception as e:  # zip, I/O and unpickling errors come in many types; all mean a bad file
        raise MinillamaError(f"{path}: unreadable checkpoint (truncated or corrupt: {_first_line(e)}); {FIX}") from None


# -- JSON files (config.json, params.json, the shard index) ------------------------------------
def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinillamaError(f"{path}: unreadable JSON ({str(e).splitlines()[0]}); {FIX}") from None
    if not isinstance(data, dict):
        raise MinillamaError(f"{path}: expected a JSON object; {FIX}")
    return data


def write_json(path: str, data: dict):
    def write(tmp: str):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    atomic_write(path, write)


# -- config values ---------------------------------------------------------------------------
def number(values: dict, key: str, kind: type, where: str, default=REQUIRED):
    """values[key] as a positive `kind` (int: an integer, not a bool, not 512.0 or "512";
    float: any finite number); `default` when absent or None.  `where` names the file
    and the dict, e.g. "stories42M.pt: model_args"."""
    value = values.get(key)
    if value is None:
        if default is REQUIRED:
            raise MinillamaError(f"{where} lacks {key!r}; {FIX}")
        return default
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = isinstance(value, int) if kind is int else is_number and math.isfinite(value)
    if not (is_number and ok and value > 0):
        need = "a positive integer" if kind is int else "a positive number"
        raise MinillamaError(f"{where}: {key!r} must be {need}, got {value!r}; {FIX}")
    return kind(value)


def make_config(where: str, **fields) -> LlamaConfig:
    """LlamaConfig(**fields), where an inconsistent combination (dim not divisible by
    n_heads, ...) is the file's fault."""
    try:
        return LlamaConfig(**fields)
    except ValueError as e:
        raise MinillamaError(f"{where}: {e}; {FIX}") from None


# -- weights ---------------------------------------------------------------------------------
def cast(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Convert only when another dtype is asked for: same dtype -> the same tensor, no copy."""
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def check_weights(state: Dict[str, torch.Tensor], where: str):
    """Every value a float tensor, and a token embedding among them."""
    if "tok_embeddings.weight" not in state:
        raise MinillamaError(f"{where}: no token embedding in the weights (not a Llama checkpoint?)")
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise MinillamaError(f"{where}: weight {name} is {kind}, not a float tensor; {FIX}")


def looks_tied(state: Dict[str, torch.Tensor]) -> bool:
    """Formats without a tie flag (llama2.c .pt, Meta): tied when the output weight is
    absent, is the embedding's storage, or is an equal copy of it."""
    emb, out = state["tok_embeddings.weight"], state.get("output.weight")
    return out is None or out.data_ptr() == emb.data_ptr() or (out.shape == emb.shape and torch.equal(out, emb))


def tie_output(config: LlamaConfig, state: Dict[str, torch.Tensor], tied: bool, where: str):
    """A tied model's embedding and output are one tensor (half the memory; the load keeps them tied)."""
    if tied:
        state["output.weight"] = state["tok_embeddings.weight"]
    elif "output.weight" not in state:
        raise MinillamaError(f"{where}: output weight (lm_head.weight / output.weight) is missing and the "
                             f"embeddings are not tied: the checkpoint is incomplete; {FIX}")
    config.tie_embeddings = tied
