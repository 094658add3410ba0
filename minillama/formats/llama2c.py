"""llama2.c's two checkpoint formats, read and written.

- `.pt` (`stories*.pt`): a zip written by torch.save holding
  {"model_args": {...}, "model": state_dict}; keys may carry the `_orig_mod.`
  prefix of torch.compile, and llama2.c's train.py also stores training state
  (iter_num, optimizer) beside them, which is ignored.  Read without running
  pickled code (see common.load_torch_file).
- legacy `.bin` (read by run.c): a 7 x int32 header (dim, hidden_dim, n_layers,
  n_heads, n_kv_heads, vocab_size, seq_len; vocab negative when the classifier
  is not shared) followed by float32 weights, each kind stacked over layers.

minillama's parameter names are llama2.c's, so neither needs renaming.
"""
from __future__ import annotations

import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..core.config import LlamaConfig
from ..errors import MinillamaError
from ..files import atomic_write
from .common import REQUIRED, cast, check_weights, load_torch_file, looks_tied, make_config, number, tie_output

BIN_HEADER = struct.Struct("<7i")
ZIP_MAGIC = b"PK\x03\x04"                         # torch.save's default container since torch 1.6
PICKLE_STARTS = (b"\x80\x02", b"\x80\x04", b"\x80\x05")  # a bare pickle (torch.save's legacy format)
ORIG_MOD_PREFIX = "_orig_mod."
# model_args fields read, with their kind; the first four have no sensible default
MODEL_ARGS = {"dim": int, "n_layers": int, "n_heads": int, "vocab_size": int, "n_kv_heads": int,
              "multiple_of": int, "max_seq_len": int, "hidden_dim": int, "norm_eps": float}
REQUIRED_ARGS = ("dim", "n_layers", "n_heads", "vocab_size")


def detect_file(path: str) -> str:
    """'llama2c_pt' or 'llama2c_bin', from the first bytes (and, for .bin, the exact size)."""
    try:
        with open(path, "rb") as f:
            head = f.read(BIN_HEADER.size)
    except OSError as e:
        raise MinillamaError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    if head[:4] == ZIP_MAGIC:
        return "llama2c_pt"
    # the exact-size .bin check first: a .bin with dim 640 (0x280) also starts with bytes 80 02
    if len(head) == BIN_HEADER.size and _bin_layout(path) is not None:
        return "llama2c_bin"
    if head[:2] in PICKLE_STARTS:
        raise MinillamaError(f"{path}: a legacy (non-zip) torch pickle, which minillama does not read; "
                             "use a checkpoint written by a current torch.save (a zip), as llama2.c's train.py writes")
    raise MinillamaError(f"{path}: not a llama2.c .pt/.bin checkpoint (unrecognised content or truncated file)")


# -- .bin ----------------------------------------------------------------------------------
def _bin_shapes(dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len, shared):
    """(name, shape) of every float32 array in a .bin file, in file order."""
    head_dim = dim // n_heads
    kv_dim = n_kv_heads * head_dim
    shapes = [("tok_embeddings.weight", (vocab, dim)),
              ("attention_norm", (n_layers, dim)),
              ("wq", (n_layers, dim, dim)), ("wk", (n_layers, kv_dim, dim)),
              ("wv", (n_layers, kv_dim, dim)), ("wo", (n_layers, dim, dim)),
              ("ffn_norm", (n_layers, dim)),
              ("w1", (n_layers, hidden, dim)), ("w2", (n_layers, dim, hidden)), ("w3", (n_layers, hidden, dim)),
              ("norm.weight", (dim,)),
              ("freq_cis_real", (seq_len, head_dim // 2)), ("freq_cis_imag", (seq_len, head_dim // 2))]
    if not shared:
        shapes.append(("output.weight", (vocab, dim)))
    return shapes


def _bin_layout(path: str):
    """Header values if the file size matches the header exactly, else None."""
    with open(path, "rb") as f:
        header = BIN_HEADER.unpack(f.read(BIN_HEADER.size))
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = header
    if min(dim, hidden, n_layers, n_heads, n_kv_heads, abs(vocab), seq_len) <= 0 or dim % n_heads:
        return None
    n_floats = sum(int(np.prod(s)) for _, s in _bin_shapes(dim, hidden, n_layers, n_heads, n_kv_heads,
                                                             abs(vocab), seq_len, vocab > 0))
    if os.path.getsize(path) != BIN_HEADER.size + 4 * n_floats:
        return None
    return header


def read_bin(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state dict), float32 as stored unless dtype asks otherwise."""
    header = _bin_layout(path)
    if header is None:
        raise MinillamaError(f"{path}: size does not match its llama2.c .bin header (truncated or not a .bin export)")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = header
    shared = vocab > 0
    vocab = abs(vocab)
    config = make_config(path, dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                         n_kv_heads=n_kv_heads, vocab_size=vocab, max_seq_len=seq_len, tie_embeddings=shared)
    data = np.fromfile(path, dtype="<f4", offset=BIN_HEADER.size)
    arrays, offset = {}, 0
    for name, shape in _bin_shapes(dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len, shared):
        n = int(np.prod(shape))
        arrays[name] = cast(torch.from_numpy(data[offset:offset + n].copy()).view(shape), dtype)
        offset += n
    state = {"tok_embeddings.weight": arrays["tok_embeddings.weight"], "norm.weight": arrays["norm.weight"]}
    for i in range(n_layers):
        for name in ("wq", "wk", "wv", "wo"):
            state[f"layers.{i}.attention.{name}.weight"] = arrays[name][i]
        for name in ("w1", "w2", "w3"):
            state[f"layers.{i}.feed_forward.{name}.weight"] = arrays[name][i]
        state[f"layers.{i}.attention_norm.weight"] = arrays["attention_norm"][i]
        state[f"layers.{i}.ffn_norm.weight"] = arrays["ffn_norm"][i]
    state["output.weight"] = arrays.get("output.weight", state["tok_embeddings.weight"])
    return config, state


def save_bin(model, path: str):
    """Write the legacy run.c format (float32).  RoPE tables are written as run.c expects."""
    c = model.config
    sd = model.state_dict()
    shared = c.tie_embeddings
    stack = lambda fmt: torch.stack([sd[fmt.format(i)] for i in range(c.n_layers)])
    cos, sin = model.rope_table("cpu")
    parts = [sd["tok_embeddings.weight"], stack("layers.{}.attention_norm.weight"),
             stack("layers.{}.attention.wq.weight"), stack("layers.{}.attention.wk.weight"),
             stack("layers.{}.attention.wv.weight"), stack("layers.{}.attention.wo.weight"),
             stack("layers.{}.ffn_norm.weight"), stack("layers.{}.feed_forward.w1.weight"),
             stack("layers.{}.feed_forward.w2.weight"), stack("layers.{}.feed_forward.w3.weight"),
             sd["norm.weight"], cos, sin]
    if not shared:
        parts.append(sd["output.weight"])
    header = BIN_HEADER.pack(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                             c.vocab_size if shared else -c.vocab_size, c.max_seq_len)
    def write(tmp: str):
        with open(tmp, "wb") as f:
            f.write(header)
            for part in parts:
                f.write(part.detach().float().cpu().contiguous().numpy().tobytes())
    atomic_write(path, write)


# -- .pt -----------------------------------------------------------------------------------
def pt_config(model_args: dict, path: str) -> LlamaConfig:
    """LlamaConfig from llama2.c's model_args, each value checked (a string or a float
    where an int belongs is named, not a TypeError deep inside the model)."""
    where = f"{path}: model_args"
    fields = {key: number(model_args, key, kind, where, REQUIRED if key in REQUIRED_ARGS else None)
              for key, kind in MODEL_ARGS.items()}
    return make_config(path, **{k: v for k, v in fields.items() if v is not None})  # absent: LlamaConfig's default


def read_pt(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state dict) in the stored dtype (float32 for llama2.c) unless dtype asks otherwise."""
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) \
            or not isinstance(ckpt.get("model_args"), dict):
        raise MinillamaError(f"{path}: not a llama2.c checkpoint (expected a dict with 'model' and 'model_args')")
    config = pt_config(ckpt["model_args"], path)
    state = {k[len(ORIG_MOD_PREFIX):] if k.startswith(ORIG_MOD_PREFIX) else k: v for k, v in ckpt["model"].items()}
    check_weights(state, path)
    tied = looks_tied(state)  # before casting, while a tied pair still shares one storage
    state = {k: cast(v, dtype) for k, v in state.items()}
    tie_output(config, state, tied, path)
    return config, state


def save_pt(model, path: str):
    """Write {"model_args", "model"} as llama2.c's train.py does."""
    c = model.config
    model_args = dict(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                      vocab_size=c.vocab_size, multiple_of=c.multiple_of, max_seq_len=c.max_seq_len,
                      hidden_dim=c.hidden_dim, norm_eps=c.norm_eps, dropout=0.0)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"model_args": model_args, "model": state}, tmp))
