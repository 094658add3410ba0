"""The prefix family: a frozen Llama steered by a few trainable vectors read before the input.

mode "prefix"   (Li & Liang 2021): every layer attends to P trainable keys/values,
                trained through P = offset + MLP(P'), MLP = Linear(dim, prefix_hidden) -> tanh
                -> Linear(prefix_hidden, n_layers * 2 * kv_dim); `fold()` keeps only P.
mode "ptuning2" (Liu et al. 2021): the same deep per-layer prompts, trained directly.
mode "prompt"   (Lester et al. 2021): P trainable input embeddings before the input's.

Keys/values enter through the KV cache (`KVCache.from_prefix`): the model behaves as
if it had already read P tokens, so inputs sit at positions P, P+1, ..., padding masks
stay correct and prefix keys are never rotated.  Shapes: L layers, KV kv heads, hd
head_dim, P prefix length; a deep prefix is one tensor [L, 2 (key, value), KV, P, hd].
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .attention import KVCache
from .errors import MinillamaError
from .files import atomic_write, atomic_write_text

MODES = ("prefix", "prompt", "ptuning2")
INITS = ("random", "vocab", "text")
SHAPE_KEYS = ("n_layers", "n_kv_heads", "head_dim", "dim", "vocab_size")


class PrefixModel(nn.Module):
    """A frozen base Llama plus a trainable prefix; a drop-in backbone for the tasks.

    forward(input_ids [B, T], attention_mask [B, T]) -> (logits [B, T, V], hidden [B, T, dim])
    for the input positions only.  `input_room` is the base's minus P: the positions
    the prefix leaves for input, so `generate` stops in time."""

    def __init__(self, base: nn.Module, mode: str = "prefix", length: int = 10, *, reparam: Optional[bool] = None,
                 prefix_hidden: int = 512, init: str = "random", init_text: Optional[str] = None,
                 tokenizer=None, init_ids: Optional[Sequence[int]] = None):
        super().__init__()
        if mode not in MODES or init not in INITS:
            raise MinillamaError(f"prefix mode must be one of {MODES} and init one of {INITS}, got {mode!r}, {init!r}")
        if reparam and mode != "prefix":
            raise MinillamaError(f"the MLP reparameterization belongs to mode 'prefix', not {mode!r}")
        c = base.config
        if not 0 <= length < c.max_seq_len:
            raise MinillamaError(f"prefix length must be in [0, {c.max_seq_len}) for this model, got {length}")
        self.base, self.mode, self.length = base.requires_grad_(False), mode, length
        self.reparam = (mode == "prefix") if reparam is None else bool(reparam)
        self.config = c
        w = base.tok_embeddings.weight  # [V, dim]
        ids = self._init_ids(init, init_text, tokenizer, init_ids)
        if mode == "prompt":
            start = w[ids] if ids is not None else torch.randn(length, c.dim, dtype=w.dtype, device=w.device) * w.std()
            self.prompt = nn.Parameter(start.detach().clone())  # [P, dim]
            return
        kv = self.base_kv(ids) if ids is not None else torch.randn(
            c.n_layers, 2, c.n_kv_heads, length, c.head_dim, dtype=w.dtype, device=w.device) * 0.02
        if not self.reparam:
            self.kv = nn.Parameter(kv)  # [L, 2, KV, P, hd]
            return
        self.prefix_embed = nn.Parameter(torch.randn(length, c.dim, dtype=w.dtype, device=w.device))  # P' [P, dim]
        self.mlp = nn.Sequential(nn.Linear(c.dim, prefix_hidden), nn.Tanh(),
                                 nn.Linear(prefix_hidden, c.n_layers * 2 * c.kv_dim)).to(w.device, w.dtype)
        if ids is None:
            self.register_buffer("offset", torch.zeros_like(kv))
        else:
            # Start exactly at the text's keys/values.  The last Linear's bias is shared by
            # all P positions, so it cannot hold a per-position target; a frozen offset can.
            # Zeroing the last layer makes MLP(P') = 0 exactly at init; its weight still gets
            # gradient at once, and W1, P' from the next step on (like LoRA's B = 0).
            self.register_buffer("offset", kv)
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    # -- initialisation ----------------------------------------------------------
    def _init_ids(self, init, text, tokenizer, ids) -> Optional[torch.Tensor]:
        """Token ids [P] whose embeddings/keys start the prefix (None: random init)."""
        if init == "random" or self.length == 0:
            return None
        if init == "vocab":
            ids = torch.randint(0, self.base.config.vocab_size, (self.length,)).tolist()
        elif ids is None:
            if not text or tokenizer is None:
                raise MinillamaError("--prefix_init text needs --prefix_init_text (and a tokenizer)")
            ids = tokenizer.encode(text, bos=True)
        ids = list(ids) * (-(-self.length // max(len(ids), 1)))  # repeat, then truncate to P
        if not ids:
            raise MinillamaError("--prefix_init_text encodes to no tokens: give a non-empty text")
        return torch.tensor(ids[: self.length], device=self.base.tok_embeddings.weight.device)

    @torch.no_grad()
    def base_kv(self, ids: torch.Tensor) -> torch.Tensor:
        """The keys/values [L, 2, KV, P, hd] the frozen model stores after reading ids [P]."""
        cache, was_training = self.base.new_cache(1, len(ids)), self.base.training
        self.base.eval()(ids[None], cache=cache)  # no dropout: the keys/values of a clean read
        self.base.train(was_training)
        P = len(ids)
        return torch.stack([torch.stack([cache.keys[i][0, :, :P], cache.values[i][0, :, :P]])
                            for i in range(cache.n_layers)])

    # -- the prefix ----------------------------------------------------------------
    def prefix_tensor(self) -> torch.Tensor:
        """The prefix as used: [P, dim] ("prompt") or [L, 2, KV, P, hd] (deep modes)."""
        if self.mode == "prompt":
            return self.prompt
        if not self.reparam:
            return self.kv
        c = self.base.config
        flat = self.mlp(self.prefix_embed)  # [P, L * 2 * KV * hd]
        deep = flat.view(self.length, c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
        return self.offset + deep

    @torch.no_grad()
    def fold(self) -> "PrefixModel":
        """Replace P = offset + MLP(P') by its value as a plain parameter (after training)."""
        if self.reparam:
            kv = self.prefix_tensor().detach().clone()
            del self.mlp, self.prefix_embed, self.offset
            self.kv, self.reparam = nn.Parameter(kv), False
        return self

    @property
    def input_room(self) -> int:
        """Positions left for input: the prefix's P virtual tokens take the first P."""
        return self.base.input_room - self.length

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        """A cache for `capacity` input tokens, holding the deep prefix ([B, KV, P, hd] per layer)."""
        if self.mode == "prompt" or self.length == 0:
            return self.base.new_cache(batch, capacity + self.length)
        kv = self.prefix_tensor()
        expand = lambda t: t[None].expand(batch, -1, -1, -1)  # noqa: E731  [KV, P, hd] -> [B, KV, P, hd]
        return KVCache.from_prefix([expand(t[0]) for t in kv], [expand(t[1]) for t in kv], capacity + self.length)

    # -- the backbone interface --------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                cache: Optional[KVCache] = None, last_only: bool = False):
        """input_ids, attention_mask: [B, T]; cache: from `new_cache` (decoding).
        Returns (logits [B, T, V], hidden [B, T, dim]), [B, 1, ...] if last_only."""
        if self.length == 0:
            return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)
        B, T = input_ids.shape
        if self.mode != "prompt":
            # capacity 0: a one-shot cache (the prefix tensors + one concatenation, see KVCache.from_prefix)
            cache = self.new_cache(B, 0) if cache is None else cache
            return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)
        if cache is not None and cache.length > 0:  # the prompt was read at the first step
            return self.base(input_ids, attention_mask, cache=cache, last_only=last_only)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = torch.cat([self.prompt[None].expand(B, -1, -1), self.base.embed(input_ids)], dim=1)  # [B, P+T, dim]
        mask = torch.cat([attention_mask.new_ones(B, self.length), attention_mask], dim=1)
        logits, hidden = self.base(attention_mask=mask, inputs_embeds=x, cache=cache, last_only=last_only)
        if last_only:
            return logits, hidden
        return logits[:, self.length:], hidden[:, self.length:]  # outputs line up with input_ids

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embed(input_ids)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """As Llama.generate, reading the prefix first."""
        from .sampling import generate
        return generate(self, input_ids, max_new_tokens, **kwargs)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(model: PrefixModel) -> Dict[str, float]:
    """{'trainable': prefix (and MLP) parameters, 'base': frozen ones, 'share': trainable / base}."""
    trainable = model.num_parameters(trainable_only=True)
    base = model.base.num_parameters()
    return {"trainable": trainable, "base": base, "share": trainable / base}


# -- adapters on disk ------------------------------------------------------------------
def base_identity(base: nn.Module) -> Dict[str, object]:
    """Shape, a hash of the architecture and a fingerprint of the embeddings (bf16 bits of
    256 sampled rows, so fp32 and bf16 copies of one checkpoint agree)."""
    c = base.config
    arch = {k: v for k, v in c.to_dict().items() if k not in ("max_seq_len", "dropout", "use_sdpa")}
    w = base.tok_embeddings.weight.detach()
    rows = w[:: max(1, w.shape[0] // 256)].to("cpu", torch.bfloat16).view(torch.int16)
    shape = {"n_layers": c.n_layers, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim, "dim": c.dim,
             "vocab_size": c.vocab_size}
    return {**shape, "config_sha256": hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16],
            "embedding_fingerprint": hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16]}


def save_adapter(model: PrefixModel, path: str, label_names: Optional[List[str]] = None,
                 head_state: Optional[Dict[str, torch.Tensor]] = None, extra: Optional[dict] = None) -> int:
    """Write <path>.safetensors (the folded prefix, plus head.* tensors) and <path>.json;
    each through a temporary file (files.atomic_write).  Returns the bytes written."""
    from safetensors.torch import save_file
    tensors = {"prefix": model.prefix_tensor().detach().float().contiguous().cpu()}
    tensors.update({f"head.{k}": v.detach().float().contiguous().cpu() for k, v in (head_state or {}).items()})
    meta = {"mode": model.mode, "length": model.length, "base": base_identity(model.base),
            "label_names": label_names, "head": sorted(head_state) if head_state else None, **(extra or {})}
    # tensors first, then the JSON that makes the adapter loadable: no half-written adapter
    atomic_write(path + ".safetensors", lambda tmp: save_file(tensors, tmp))
    atomic_write_text(path + ".json", json.dumps(meta, indent=1))
    return sum(os.path.getsize(path + s) for s in (".safetensors", ".json"))


def load_adapter(base: nn.Module, path: str) -> PrefixModel:
    """The PrefixModel saved at <path>.{safetensors,json}, on `base` (folded).  Also sets
    `.adapter_meta` (the JSON) and `.head_state` (head tensors, {} if none)."""
    from safetensors.torch import load_file
    for suffix in (".json", ".safetensors"):
        if not os.path.isfile(path + suffix):
            raise MinillamaError(f"adapter file {path + suffix} not found: pass the path without the extension")
    try:
        with open(path + ".json") as f:
            meta = json.load(f)
        want, have = meta["base"], base_identity(base)
        mode, length = meta["mode"], int(meta["length"])
    except (ValueError, KeyError, TypeError) as e:
        raise MinillamaError(f"{path}.json: not a minillama prefix adapter config ({e}); re-save the adapter") from None
    if any(want[k] != have[k] for k in SHAPE_KEYS):
        shape = lambda d: ", ".join(f"{k}={d[k]}" for k in SHAPE_KEYS)  # noqa: E731
        raise MinillamaError(f"{path}.json: adapter made for a model with {shape(want)}, but this model has "
                             f"{shape(have)}: load it onto the base model it was trained with")
    if (want["config_sha256"], want["embedding_fingerprint"]) != (have["config_sha256"], have["embedding_fingerprint"]):
        warnings.warn(f"{path}: adapter was trained on a different base model of the same shape")
    tensors = load_file(path + ".safetensors")
    model = PrefixModel(base, mode, length, reparam=False)
    w = base.tok_embeddings.weight
    with torch.no_grad():
        model.prefix_tensor().copy_(tensors.pop("prefix").to(w.device, w.dtype))
    model.adapter_meta = meta
    model.head_state = {k[len("head."):]: v.to(w.device) for k, v in tensors.items()}
    return model


# -- several prefixes -------------------------------------------------------------------
def interpolate(a: PrefixModel, b: PrefixModel, alpha: float) -> PrefixModel:
    """A folded PrefixModel on a's base with prefix alpha * A + (1 - alpha) * B."""
    if (a.mode, a.length) != (b.mode, b.length) or a.base.config != b.base.config:
        raise MinillamaError(f"can only interpolate adapters of one mode, length and base model: "
                             f"got {a.mode}/{a.length} and {b.mode}/{b.length}")
    out = PrefixModel(a.base, a.mode, a.length, reparam=False)
    with torch.no_grad():
        out.prefix_tensor().copy_(alpha * a.prefix_tensor() + (1 - alpha) * b.prefix_tensor())
    return out


class PrefixBank(nn.Module):
    """Named adapters on one shared base; `use(name)` (or forward(..., adapter=name))
    selects the one every following batch reads.  A backbone like PrefixModel."""

    def __init__(self, adapters: Dict[str, PrefixModel]):
        super().__init__()
        if not adapters or len({id(m.base) for m in adapters.values()}) != 1:
            raise MinillamaError("a PrefixBank needs at least one adapter, all on the same base model object")
        self.adapters = nn.ModuleDict(adapters)
        self.active = next(iter(adapters))

    def use(self, name: str) -> "PrefixBank":
        if name not in self.adapters:
            raise MinillamaError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters)}")
        self.active = name
        return self

    @property
    def current(self) -> PrefixModel:
        return self.adapters[self.active]

    @property
    def config(self):
        return self.current.config

    @property
    def input_room(self) -> int:
        return self.current.input_room

    def forward(self, input_ids, attention_mask=None, *, adapter: Optional[str] = None, **kwargs):
        return (self.adapters[adapter] if adapter else self.current)(input_ids, attention_mask, **kwargs)

    def new_cache(self, batch: int, capacity: int = 0) -> KVCache:
        return self.current.new_cache(batch, capacity)

    def embed(self, input_ids):
        return self.current.embed(input_ids)
