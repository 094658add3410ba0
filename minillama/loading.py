"""A model and its tokenizer, checked against each other: the glue the CLI's tasks share.

Reading weights is `minillama.formats` (load_model); reading tokenizers is
`minillama.tokenizer` (load_tokenizer).  This module picks the tokenizer that
belongs to a model, finds setup.sh's downloads from any working directory, and
refuses a tokenizer that does not fit the model.
"""
from __future__ import annotations

import os
from typing import Optional

from .errors import MinillamaError
from .files import not_found, resolve_repo_path
from .formats import checkpoint_hint, load_model
from .formats.hf import LLAMA3_VOCAB_SIZE
from .tokenizer import TOKENIZER_HINT, load_tokenizer

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
    if model.config.vocab_size == LLAMA3_VOCAB_SIZE and tokenizer.family != "llama3":
        raise MinillamaError(
            f"tokenizer {tokenizer_path} is a {tokenizer.family} tokenizer but model {model_path} is a Llama 3 "
            "model: pass its tokenizer.model (--tokenizer), or omit --tokenizer to use the directory's own")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise MinillamaError(
            f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} tokens but model {model_path} only "
            f"{model.config.vocab_size}: pass the tokenizer that belongs to this checkpoint (--tokenizer)")


def load_model_and_tokenizer(model_path: str, tokenizer_path: Optional[str] = None, *, norm: Optional[str] = None,
                             device="cpu", dtype=None, use_sdpa: bool = False, chat: bool = False,
                             fast: bool = False):
    """The model at model_path and its tokenizer (tokenizer_path, or the default for
    that model), checked against each other.

    Relative paths missing under the working directory are also looked for in the
    repository root (files.resolve_repo_path), where setup.sh puts stories42M.pt and
    tokenizer.model, so the defaults work from any directory.  The tokenizer is loaded
    first: it is cheap, and a wrong one then fails before a big model load."""
    model_path = resolve_repo_path(model_path)
    if not os.path.exists(model_path):
        raise not_found("checkpoint", model_path, checkpoint_hint(model_path), repo_too=True)
    tokenizer_path = resolve_repo_path(default_tokenizer_path(model_path, tokenizer_path))
    if not os.path.exists(tokenizer_path):
        raise not_found("tokenizer", tokenizer_path, TOKENIZER_HINT, repo_too=True)
    tokenizer = load_tokenizer(tokenizer_path)
    if chat and not hasattr(tokenizer, "format_chat"):
        raise MinillamaError(f"--chat needs a Llama 3 tokenizer with a chat format; {tokenizer_path} is a "
                             f"{tokenizer.family} tokenizer: drop --chat or use a Llama 3.2 Instruct directory")
    model = load_model(model_path, norm=norm, device=device, dtype=dtype, use_sdpa=use_sdpa, fast=fast)
    check_vocab_match(model, tokenizer, model_path, tokenizer_path)
    return model, tokenizer
