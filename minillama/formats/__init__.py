"""Weight formats: which one a path holds, and one entry point each way.

format        what                                               module
llama2c_pt    llama2.c `.pt` (torch.save zip, weights_only)      llama2c.py
llama2c_bin   llama2.c legacy `.bin` (run.c's header + floats)   llama2c.py
hf_dir        Hugging Face directory (config.json, safetensors)  hf.py
meta_dir      Meta directory (params.json, consolidated.00.pth)  meta.py

The format is detected from the content, never from the name.  Every reader
returns `(LlamaConfig, state_dict)` in minillama's names; `load_model` turns
that into a ready model, and `save_checkpoint` writes any of the four.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Union

import torch

from ..core.config import NORMS, LlamaConfig, Runtime
from ..errors import MinillamaError, warn
from ..files import not_found
from ..core.model import Llama
from ..fast import speed_up
from . import hf, llama2c, meta

def checkpoint_hint(path: str) -> str:
    """How to get the checkpoint that was asked for (named after it, not after the default)."""
    name = os.path.basename(os.path.normpath(path))
    if name == "stories42M.pt":
        return ("`bash setup.sh` downloads stories42M.pt into the repository root (or fetch "
                "https://www.cs.cmu.edu/~vijayv/stories42M.pt); the bundled model runs offline: "
                "--pretrained-model-path assets/stories260K/stories260K.bin --tokenizer "
                "assets/stories260K/tok512.model --norm rmsnorm")
    if "llama-3.2" in name.lower():
        return (f"`MINILLAMA_LLAMA32=1 bash setup.sh` downloads {name} (gated: accept Meta's license and run "
                f"`.venv/bin/hf auth login` first), or pass the directory where you keep it")
    return "check the path given to --pretrained-model-path (a llama2.c .pt/.bin file, or a HF or Meta directory)"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COURSE_DEFAULT_NORM = "layernorm"  # the course's spec; stories checkpoints were trained with rmsnorm
READERS = {"llama2c_pt": llama2c.read_pt, "llama2c_bin": llama2c.read_bin,
           "hf_dir": hf.read_hf_dir, "meta_dir": meta.read_meta_dir}
SAVERS = {"pt": llama2c.save_pt, "bin": llama2c.save_bin, "hf": hf.save_hf_dir, "meta": meta.save_meta_dir}


def detect_format(path: str) -> str:
    """'llama2c_pt', 'llama2c_bin', 'hf_dir' or 'meta_dir', from content, not name."""
    if not os.path.exists(path):
        raise not_found("checkpoint", path, checkpoint_hint(path))
    if not os.path.isdir(path):
        return llama2c.detect_file(path)
    if os.path.isfile(os.path.join(path, hf.HF_CONFIG)):
        return "hf_dir"
    if meta.params_folder(path) is not None:
        return "meta_dir"
    raise MinillamaError(f"{path}: directory has no {hf.HF_CONFIG} (Hugging Face) or {meta.META_PARAMS} (Meta): "
                         "point --pretrained-model-path at a downloaded Llama 3.2 directory")


def read_checkpoint(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state_dict in minillama names) for any supported format; tensors are
    converted to dtype one at a time while reading (None keeps the stored dtype)."""
    return READERS[detect_format(path)](path, dtype)


def save_checkpoint(model, path: str, fmt: Optional[str] = None):
    """Save as 'pt' or 'bin' (a file; default: from the extension, .bin -> bin, else pt),
    or 'hf' / 'meta' (a directory)."""
    fmt = fmt or ("bin" if path.endswith(".bin") else "pt")
    if fmt not in SAVERS:
        raise MinillamaError(f"unknown checkpoint format {fmt!r}: use one of {', '.join(SAVERS)}")
    SAVERS[fmt](model, path)


# -- load_model ------------------------------------------------------------------------------
def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MinillamaError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_dtype_on_device(dtype: Optional[torch.dtype], device: Union[str, torch.device]):
    """Fail early, in one line, when the device cannot run the dtype (or does not exist):
    a tiny matmul in that dtype is the cheapest exact test (e.g. bf16 on pre-Ampere GPUs)."""
    try:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise MinillamaError(f"device {device} requested but CUDA is not available: use device='cpu' (drop --use_gpu)")
        x = torch.ones(2, 2, dtype=dtype or torch.float32, device=device)
        (x @ x).sum().item()
    except MinillamaError:
        raise
    except (RuntimeError, TypeError) as e:
        raise MinillamaError(f"dtype {dtype} is not supported on device {device} ({str(e).splitlines()[0]}): "
                             "choose another --dtype (float32 works everywhere)") from None


def choose_norm(fmt: str, norm: Optional[str]) -> str:
    """The format decides: stories checkpoints (llama2.c) get the course's LayerNorm unless
    asked otherwise; Llama 3.2 directories always RMSNorm (LayerNorm would ruin a 1B model)."""
    if norm is not None and norm not in NORMS:
        raise MinillamaError(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if fmt in ("hf_dir", "meta_dir"):
        if norm == "layernorm":
            warn("Llama 3.2 checkpoints use RMSNorm; ignoring --norm layernorm")
        return "rmsnorm"
    return norm or COURSE_DEFAULT_NORM


def load_model(path: str, norm: Optional[str] = None, device: Union[str, torch.device] = "cpu",
               dtype: Union[None, str, torch.dtype] = None, use_sdpa: bool = False,
               max_seq_len: Optional[int] = None, fast: bool = False) -> Llama:
    """Load a llama2.c .pt/.bin file or a Llama 3.2 directory (HF or Meta layout),
    detecting the format from content.  Returns the model in eval mode.

    norm: 'layernorm' or 'rmsnorm' (stories default: layernorm, the course's);
    dtype: None keeps the checkpoint's (float32 for llama2.c), or
    'float32' / 'bfloat16' / 'float16'; max_seq_len: shrink the RoPE table/context.
    fast: minillama.fast.speed_up (same outputs, faster); use_sdpa: that, with torch's
    fused attention kernel.  Neither: the plain hand-written core."""
    dtype = resolve_dtype(dtype)
    check_dtype_on_device(dtype, device)
    fmt = detect_format(path)
    config, state = READERS[fmt](path, dtype)
    config.norm = choose_norm(fmt, norm)
    if max_seq_len is not None:
        config.max_seq_len = max_seq_len
    with torch.device("meta"):  # shapes only: the checkpoint's tensors are assigned, never copied
        model = Llama(config, Runtime())
    expected = set(model.state_dict().keys())
    missing = expected - set(state)
    if missing:
        raise MinillamaError(f"{path}: checkpoint lacks weights {sorted(missing)[:3]}... (incomplete or another architecture)")
    for name, tensor in model.state_dict().items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise MinillamaError(f"{path}: weight {name} has shape {tuple(state[name].shape)}, "
                                 f"the config implies {tuple(tensor.shape)}")
    target_dtype = dtype or state["tok_embeddings.weight"].dtype
    state = {k: v.to(dtype=target_dtype) for k, v in state.items() if k in expected}
    model.load_state_dict(state, assign=True, strict=True)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model = model.to(device).eval()
    return speed_up(model, sdpa=use_sdpa) if fast or use_sdpa else model
