"""One entry point that turns any supported checkpoint into a ready model."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import torch

from .checkpoints import detect_format, read_checkpoint
from .config import NORMS, Runtime
from .errors import MinillamaError
from .model import Llama
from .tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COURSE_DEFAULT_NORM = "layernorm"  # the course's spec; stories checkpoints were trained with rmsnorm


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
    """Stories checkpoints: the course's LayerNorm unless asked otherwise.
    Llama 3 checkpoints: always RMSNorm (LayerNorm would ruin a 1B model)."""
    if norm is not None and norm not in NORMS:
        raise MinillamaError(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if fmt in ("hf_dir", "meta_dir"):  # Llama 3.2 directories
        if norm == "layernorm":
            warnings.warn("Llama 3.2 checkpoints use RMSNorm; ignoring --norm layernorm")
        return "rmsnorm"
    return norm or COURSE_DEFAULT_NORM


def load_model(path: str, norm: Optional[str] = None, device: Union[str, torch.device] = "cpu",
               dtype: Union[None, str, torch.dtype] = None, use_sdpa: bool = False,
               max_seq_len: Optional[int] = None) -> Llama:
    """Load a llama2.c .pt/.bin file or a Llama 3.2 directory (HF or Meta layout),
    detecting the format from content.  Returns the model in eval mode.

    norm: 'layernorm' or 'rmsnorm' (stories default: layernorm, the course's);
    dtype: None keeps the checkpoint's (float32 for llama2.c), or
    'float32' / 'bfloat16' / 'float16'; max_seq_len: shrink the RoPE table/context."""
    dtype = resolve_dtype(dtype)
    check_dtype_on_device(dtype, device)
    config, state = read_checkpoint(path, dtype)
    config.norm = choose_norm(detect_format(path), norm)
    if max_seq_len is not None:
        config.max_seq_len = max_seq_len
    with torch.device("meta"):
        model = Llama(config, Runtime(use_sdpa=use_sdpa))
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
    return model.to(device).eval()


DEFAULT_LLAMA2_TOKENIZER = "tokenizer.model"  # where setup.sh puts the Llama 2 tokenizer


def default_tokenizer_path(model_path: str, tokenizer_arg: Optional[str]) -> str:
    """--tokenizer if given; else a Llama 3.2 directory's own tokenizer
    (tokenizer.model, then original/tokenizer.model); else the Llama 2 default."""
    if tokenizer_arg:
        return tokenizer_arg
    if os.path.isdir(model_path):
        return model_path  # load_tokenizer searches the directory
    return DEFAULT_LLAMA2_TOKENIZER


def check_vocab_match(model, tokenizer, model_path: str, tokenizer_path: str):
    """A tokenizer whose ids exceed the model's embedding table is the wrong one; so is
    a non-Llama-3 tokenizer on a model with Llama 3's 128256-token vocabulary."""
    from .llama3 import LLAMA3_VOCAB_SIZE

    if model.config.vocab_size == LLAMA3_VOCAB_SIZE and tokenizer.family != "llama3":
        raise MinillamaError(
            f"tokenizer {tokenizer_path} is a {tokenizer.family} tokenizer but model {model_path} is a Llama 3 "
            "model: pass its tokenizer.model (--tokenizer), or omit --tokenizer to use the directory's own")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise MinillamaError(
            f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} tokens but model {model_path} only "
            f"{model.config.vocab_size}: pass the tokenizer that belongs to this checkpoint (--tokenizer)")


def load_model_and_tokenizer(model_path: str, tokenizer_path: Optional[str] = None, *, norm: Optional[str] = None,
                             device="cpu", dtype=None, use_sdpa: bool = False, chat: bool = False):
    """The model at model_path and its tokenizer (tokenizer_path, or the default for
    that model), checked against each other.  The tokenizer is loaded first: it is
    cheap, and a wrong one then fails before a big model load."""
    if not os.path.exists(model_path):
        raise MinillamaError(
            f"checkpoint not found: {model_path} (./setup.sh downloads stories42M.pt into the repository root; "
            "or fetch https://www.cs.cmu.edu/~vijayv/stories42M.pt, or pass --pretrained-model-path)")
    tokenizer_path = default_tokenizer_path(model_path, tokenizer_path)
    if not os.path.exists(tokenizer_path):
        raise MinillamaError(
            f"tokenizer not found: {tokenizer_path} (./setup.sh puts the Llama 2 tokenizer.model into the "
            "repository root; or pass --tokenizer PATH)")
    tokenizer = load_tokenizer(tokenizer_path)
    if chat and not hasattr(tokenizer, "format_chat"):
        raise MinillamaError(f"--chat needs a Llama 3 tokenizer with a chat format; {tokenizer_path} is a "
                             f"{tokenizer.family} tokenizer: drop --chat or use a Llama 3.2 Instruct directory")
    model = load_model(model_path, norm=norm, device=device, dtype=dtype, use_sdpa=use_sdpa)
    check_vocab_match(model, tokenizer, model_path, tokenizer_path)
    return model, tokenizer
