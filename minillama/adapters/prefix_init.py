"""Where the prefix family starts (`PrefixConfig.init`): at random, at the keys/values (prompt
tuning: embeddings) of random vocabulary tokens ("vocab"), or of a text ("text": `init_text`
through the tokenizer, or token ids `init_ids`), Li & Liang's start at real words' activations.
Shapes: L layers, KV kv heads, P prefix length, hd head_dim, V vocabulary.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import MinillamaError
from .checks import check_choice

INITS = ("random", "vocab", "text")


def check_init(cfg):
    """A PrefixConfig's init settings, each mistake one line naming its flag."""
    check_choice(cfg.init, INITS, "--prefix_init")
    if cfg.init == "text" and not cfg.init_text and cfg.init_ids is None:
        raise MinillamaError("--prefix_init text needs --prefix_init_text \"some words\"")


def start_keys_values(base: nn.Module, cfg, tokenizer=None) -> torch.Tensor:
    """A deep prefix's start [L, 2, KV, P, hd]: the keys/values of cfg's tokens, or random at
    std 0.02."""
    c, w, ids = base.config, base.tok_embeddings.weight, init_token_ids(base, cfg, tokenizer)
    if ids is not None:
        return keys_values_of(base, ids)
    return torch.randn(c.n_layers, 2, c.n_kv_heads, cfg.length, c.head_dim, dtype=w.dtype, device=w.device) * 0.02


def start_embeddings(base: nn.Module, cfg, tokenizer=None) -> torch.Tensor:
    """A prompt's start [P, dim]: the embeddings of cfg's tokens, or random at the scale of the
    model's own embeddings [V, dim]."""
    w, ids = base.tok_embeddings.weight, init_token_ids(base, cfg, tokenizer)
    start = w[ids] if ids is not None else torch.randn(cfg.length, base.config.dim, dtype=w.dtype,
                                                       device=w.device) * w.std()
    return start.detach().clone()


def init_token_ids(base: nn.Module, cfg, tokenizer=None) -> Optional[torch.Tensor]:
    """Token ids [P] whose embeddings/keys start the prefix of `cfg` (a PrefixConfig; None:
    random init).  A text shorter than P is repeated, a longer one cut."""
    if cfg.init == "random":
        return None
    if cfg.init == "vocab":
        ids = torch.randint(0, base.config.vocab_size, (cfg.length,)).tolist()
    elif cfg.init_ids is not None:
        ids = list(cfg.init_ids)
    else:
        if tokenizer is None:
            raise MinillamaError("--prefix_init text needs a tokenizer to encode --prefix_init_text")
        ids = tokenizer.encode(cfg.init_text, bos=True)
    if not ids:
        raise MinillamaError("--prefix_init_text encodes to no tokens: give a non-empty text")
    ids = ids * (-(-cfg.length // len(ids)))
    return torch.tensor(ids[: cfg.length], device=base.tok_embeddings.weight.device)


@torch.no_grad()
def keys_values_of(base: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The keys/values [L, 2, KV, P, hd] the frozen model stores after reading ids [P]."""
    cache, was_training = base.new_cache(1, len(ids)), base.training
    base.eval()(ids[None], cache=cache)  # no dropout: the keys/values of a clean read
    base.train(was_training)
    P = len(ids)
    return torch.stack([torch.stack([cache.keys[i][0, :, :P], cache.values[i][0, :, :P]])
                        for i in range(cache.n_layers)])
