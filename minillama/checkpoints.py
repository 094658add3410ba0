"""Reading and writing checkpoints, format detected from the file's content.

Formats:
- llama2.c PyTorch checkpoint (`stories*.pt`): a zip written by torch.save
  holding {"model_args": {...}, "model": state_dict}; keys may carry the
  `_orig_mod.` prefix of torch.compile.  Loaded with weights_only=True, so a
  hostile pickle is refused instead of run.
- llama2.c legacy export (`*.bin`, read by run.c): a 7 x int32 header
  (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab
  negative when the classifier is not shared) followed by float32 weights.
- Llama 3.2 directories (Hugging Face or Meta layout): see `load_llama3_dir`.
"""
from __future__ import annotations

import os
import struct
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .config import LlamaConfig
from .errors import MinillamaError
from .files import atomic_write

BIN_HEADER = struct.Struct("<7i")
ORIG_MOD_PREFIX = "_orig_mod."
LLAMA2C_ARG_NAMES = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                     "max_seq_len", "hidden_dim", "norm_eps", "dropout")


# -- detection ------------------------------------------------------------------
def detect_format(path: str) -> str:
    """'llama2c_pt', 'llama2c_bin', 'hf_dir' or 'meta_dir', from content, not name."""
    if not os.path.exists(path):
        raise MinillamaError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return "hf_dir"
        if os.path.isfile(os.path.join(path, "params.json")) or os.path.isfile(os.path.join(path, "original", "params.json")):
            return "meta_dir"
        raise MinillamaError(f"{path}: directory has no config.json (Hugging Face) or params.json (Meta): "
                             "point --pretrained-model-path at a downloaded Llama 3.2 directory")
    with open(path, "rb") as f:
        head = f.read(BIN_HEADER.size)
    if head[:4] == b"PK\x03\x04":
        return "llama2c_pt"
    # the exact-size .bin check first: a .bin with dim 640 (0x280) also starts with bytes 80 02
    if len(head) == BIN_HEADER.size and _bin_layout(path) is not None:
        return "llama2c_bin"
    if head[:2] in (b"\x80\x02", b"\x80\x04", b"\x80\x05"):
        raise MinillamaError(f"{path}: a legacy (non-zip) pickle; re-save it with a current torch.save, "
                             "minillama only loads zip checkpoints with weights_only=True")
    raise MinillamaError(f"{path}: not a llama2.c .pt/.bin checkpoint (unrecognised content or truncated file)")


# -- llama2.c .bin ----------------------------------------------------------------
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


def load_llama2c_bin(path: str) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    header = _bin_layout(path)
    if header is None:
        raise MinillamaError(f"{path}: size does not match its llama2.c .bin header (truncated or not a .bin export)")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = header
    shared = vocab > 0
    vocab = abs(vocab)
    config = LlamaConfig(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                         vocab_size=vocab, max_seq_len=seq_len, tie_embeddings=shared)
    data = np.fromfile(path, dtype="<f4", offset=BIN_HEADER.size)
    arrays, offset = {}, 0
    for name, shape in _bin_shapes(dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len, shared):
        n = int(np.prod(shape))
        arrays[name] = torch.from_numpy(data[offset:offset + n].copy()).view(shape)
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


def save_llama2c_bin(model, path: str):
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


# -- llama2.c .pt -----------------------------------------------------------------
def load_llama2c_pt(path: str) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise MinillamaError(f"{path}: refused to load, the checkpoint contains pickled code "
                                 "(only tensors and plain values are accepted)") from None
        raise MinillamaError(f"{path}: unreadable checkpoint (truncated or corrupt): {str(e).splitlines()[0]}") from None
    except Exception as e:  # any other unpickling failure is the file's fault, not ours
        raise MinillamaError(f"{path}: refused to load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise MinillamaError(f"{path}: not a llama2.c checkpoint (expected a dict with 'model' and 'model_args')")
    args = {k: v for k, v in ckpt["model_args"].items() if k in LLAMA2C_ARG_NAMES}
    args.pop("dropout", None)
    config = LlamaConfig(**args)
    state = {k[len(ORIG_MOD_PREFIX):] if k.startswith(ORIG_MOD_PREFIX) else k: v for k, v in ckpt["model"].items()}
    state.setdefault("output.weight", state.get("tok_embeddings.weight"))
    config.tie_embeddings = state["output.weight"].data_ptr() == state["tok_embeddings.weight"].data_ptr() \
        or torch.equal(state["output.weight"], state["tok_embeddings.weight"])
    return config, state


def save_llama2c_pt(model, path: str):
    """Write {"model_args", "model"} as llama2.c's train.py does."""
    c = model.config
    model_args = dict(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                      vocab_size=c.vocab_size, multiple_of=c.multiple_of, max_seq_len=c.max_seq_len,
                      hidden_dim=c.hidden_dim, norm_eps=c.norm_eps, dropout=0.0)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"model_args": model_args, "model": state}, tmp))


# -- shared helpers -------------------------------------------------------------------
def read_checkpoint(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state_dict) for any supported format."""
    fmt = detect_format(path)
    if fmt == "llama2c_pt":
        return load_llama2c_pt(path)
    if fmt == "llama2c_bin":
        return load_llama2c_bin(path)
    from .llama3 import read_llama3_dir  # Llama 3.2 directories (HF or Meta layout)
    return read_llama3_dir(path, fmt, dtype)


def save_checkpoint(model, path: str, fmt: Optional[str] = None):
    """Save as 'pt' or 'bin' (default: from the file extension, .bin -> bin)."""
    fmt = fmt or ("bin" if path.endswith(".bin") else "pt")
    (save_llama2c_bin if fmt == "bin" else save_llama2c_pt)(model, path)
