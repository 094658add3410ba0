"""Adapter files: <path>.safetensors (the tensors) + <path>.json (what they are).

The JSON names the method and its config, the identity of the base model the adapter
was trained on, and task extras (label names, whether a classification head's tensors
`head.*` travel along).  Loading checks the base before building anything: another
shape is refused, the same shape with other weights is allowed with a warning.
Files written by the previous release (prefix family: {"mode", "length"}) still load.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import MinillamaError
from ..files import atomic_write_group, contents
from .base import AdaptedModel
from .identity import SHAPE_KEYS, base_identity, check_base, check_finite
from .adapterhub_format import check_adapterhub_exportable, is_adapterhub_dir, load_adapterhub, peek_adapterhub
from .peft_format import check_exportable, is_peft_dir, load_peft
from .registry import METHODS, REGISTRY

HEAD_PREFIX = "head."


def parameter_counts(model: AdaptedModel) -> Dict[str, float]:
    """{'trainable': adapter parameters, 'base': frozen ones, 'share': trainable / base}."""
    trainable = model.num_parameters(trainable_only=True)
    return {"trainable": trainable, "base": model.base_parameters, "share": trainable / model.base_parameters}


# -- writing ------------------------------------------------------------------------------
def save_adapter(model: AdaptedModel, path: str, label_names: Optional[List[str]] = None,
                 head_state: Optional[Dict[str, torch.Tensor]] = None, extra: Optional[dict] = None) -> int:
    """Write <path>.safetensors (the adapter's tensors, plus head.* tensors) and <path>.json,
    as one unit through temporary files (files.atomic_write_group).  Returns the bytes written."""
    from safetensors.torch import save
    as_saved = lambda t: t.detach().float().contiguous().cpu()  # noqa: E731
    tensors = {k: as_saved(v) for k, v in model.adapter_tensors().items()}
    tensors.update({HEAD_PREFIX + k: as_saved(v) for k, v in (head_state or {}).items()})
    meta = {"method": model.method, "config": model.cfg.to_dict(), "base": base_identity(model.base),
            "label_names": label_names, "head": sorted(head_state) if head_state else None, **(extra or {})}
    if hasattr(model, "length"):  # the previous release's keys, so its readers still load prefixes
        meta.update(mode=model.method, length=model.length)
    # one unit, the JSON that makes the adapter loadable last: both files land, or neither
    atomic_write_group([(path + ".safetensors", contents(save(tensors))),
                        (path + ".json", contents(json.dumps(meta, indent=1)))])
    return sum(os.path.getsize(path + s) for s in (".safetensors", ".json"))


# -- reading ------------------------------------------------------------------------------
def read_adapter_meta(path: str) -> dict:
    """The JSON of the adapter at <path>, with 'method' and 'config' filled in for old files."""
    if os.path.isfile(path + ".safetensors") and not os.path.isfile(path + ".json"):
        raise MinillamaError(f"adapter {path}.safetensors has no {path}.json beside it: that adapter was not "
                             "saved completely (its run stopped while writing it); train and save it again")
    for suffix in (".json", ".safetensors"):
        if not os.path.isfile(path + suffix):
            raise MinillamaError(f"adapter file {path + suffix} not found: pass the --save_adapter path of a "
                                 "trained adapter, without the extension, or a PEFT adapter directory")
    try:
        with open(path + ".json", encoding="utf-8") as f:
            meta = json.load(f)
        if "method" not in meta:  # the previous release: prefix family only, {"mode", "length"}
            meta["method"], meta["config"] = meta["mode"], {"length": int(meta["length"])}
        if not isinstance(meta["base"], dict) or not all(k in meta["base"] for k in SHAPE_KEYS):
            raise KeyError("base")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MinillamaError(f"{path}.json: not a minillama adapter config ({type(e).__name__}: {e}); "
                             "re-save the adapter") from None
    return meta


def peek_adapter(path: str) -> dict:
    """What a saved adapter's JSON says (method, config, label names, ...), read before any
    model loads; a PEFT directory: its method only as PEFT names it, and no label names."""
    if is_adapterhub_dir(path):
        return peek_adapterhub(path)
    if is_peft_dir(path):
        return {"method": None, "config": {}, "label_names": None}
    return read_adapter_meta(path)


def read_tensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path + ".safetensors")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise MinillamaError(f"{path}.safetensors: unreadable adapter tensors, truncated or corrupt "
                             f"({str(e).splitlines()[0][:80]}): re-save or re-copy the adapter") from None


def check_tensors(expected: Dict[str, torch.Tensor], found: Dict[str, torch.Tensor], path: str):
    """Every tensor the method needs, in the shape its config implies."""
    missing = sorted(set(expected) - set(found))
    if missing:
        raise MinillamaError(f"{path}.safetensors lacks tensor {missing[0]!r} that its .json implies: "
                             "re-save the adapter")
    for name, target in expected.items():
        if tuple(found[name].shape) != tuple(target.shape):
            raise MinillamaError(f"{path}.safetensors: tensor {name!r} has shape {tuple(found[name].shape)}, but "
                                 f"{path}.json implies {tuple(target.shape)}: the two files do not belong together")


def load_adapter(base: nn.Module, path: str, tokenizer=None) -> AdaptedModel:
    """The adapter saved at <path>.{safetensors,json}, attached to `base`, frozen and
    finalized (a LoRA adapter is injected into `base` itself).  Also sets `.adapter_meta`
    (the JSON) and `.head_state` (head tensors, {} if none).  A directory holding
    adapter_config.json is read as AdapterHub's (adapters/adapterhub_format.py) or else as a Hugging Face
    PEFT adapter (adapters/peft_format.py)."""
    if is_adapterhub_dir(path):
        return load_adapterhub(base, path, tokenizer)
    if is_peft_dir(path):
        return load_peft(base, path, tokenizer)
    meta = read_adapter_meta(path)
    check_base(meta, base, path)
    if meta["method"] not in REGISTRY:
        raise MinillamaError(f"{path}.json: unknown adapter method {meta['method']!r} "
                             f"(this minillama knows {', '.join(REGISTRY)})")
    tensors = read_tensors(path)
    check_finite(tensors, f"{path}.safetensors")
    method = REGISTRY[meta["method"]]
    # where training started is no matter: the saved tensors replace it
    config = {k: v for k, v in meta["config"].items() if k not in method.config.start_fields}
    model = method.model(base, method.config(**config), tokenizer)
    check_tensors(model.expected_tensors(), tensors, path)
    model.load_adapter_tensors(tensors)
    model.finalize().requires_grad_(False)
    w = base.tok_embeddings.weight
    model.adapter_meta = meta
    model.head_state = {k[len(HEAD_PREFIX):]: v.to(w.device) for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return model


# -- several adapters -----------------------------------------------------------------------
def interpolate(a: AdaptedModel, b: AdaptedModel, alpha: float) -> AdaptedModel:
    """A finalized adapter on a's base whose tensors are alpha * A + (1 - alpha) * B
    (the prefix family: both of one method and length, on bases of one architecture)."""
    if not hasattr(a, "length") or (a.method, a.length) != (b.method, b.length) or a.base.config != b.base.config:
        raise MinillamaError(f"can only interpolate prefix-family adapters of one method, length and base model: "
                             f"got {a.method}/{getattr(a, 'length', '-')} and {b.method}/{getattr(b, 'length', '-')}")
    out = type(a)(a.base, a.cfg).finalize()
    ta, tb = a.adapter_tensors(), b.adapter_tensors()
    out.load_adapter_tensors({k: alpha * ta[k] + (1 - alpha) * tb[k] for k in ta})
    return out


def check_adapter_sources(paths: Optional[List[str]], alpha: Optional[float], names: Optional[List[str]] = None):
    """--load_adapter A, or A B with --interpolate ALPHA, or A B ... with --adapter_names a,b,..."""
    n = len(paths or [])
    if names is not None:
        if alpha is not None or len(names) != n or len(set(names)) != n or not all(names):
            raise MinillamaError(f"--adapter_names needs one distinct name per --load_adapter path and no "
                                 f"--interpolate: got {n} path(s) and names {','.join(names)!r}")
        return
    if n > 2 or (n == 2) != (alpha is not None) or (n == 0 and alpha is not None):
        raise MinillamaError("--load_adapter takes one adapter, or two with --interpolate ALPHA "
                             f"(got {n} adapter(s){'' if alpha is None else ' and --interpolate'})")
    if alpha is not None and not abs(alpha) < float("inf"):
        raise MinillamaError(f"--interpolate must be a finite number, got {alpha}")


def load_adapters(base: nn.Module, paths: List[str], alpha: Optional[float] = None,
                  tokenizer=None) -> Tuple[AdaptedModel, Dict[str, torch.Tensor]]:
    """(backbone, head_state) of --load_adapter A, or of alpha * A + (1 - alpha) * B."""
    check_adapter_sources(paths, alpha)
    adapters = [load_adapter(base, path, tokenizer) for path in paths]
    backbone, head = adapters[0], adapters[0].head_state
    if len(adapters) == 2:
        heads = [a.head_state for a in adapters]
        if set(heads[0]) != set(heads[1]):
            raise MinillamaError("cannot interpolate an adapter with a cls head and one without (verbalizer)")
        backbone = interpolate(adapters[0], adapters[1], alpha)
        backbone.adapter_meta = adapters[0].adapter_meta
        head = {k: alpha * heads[0][k] + (1 - alpha) * heads[1][k] for k in heads[0]}
        print(f"adapter: {alpha:g} x {paths[0]} + {1 - alpha:g} x {paths[1]}")
    return backbone.requires_grad_(False), head


def check_lm_adapters(paths: Optional[List[str]], run: str):
    """Where the language model's own outputs are scored (`run`: MMLU, E2E), an adapter that leaves
    them as they are (a probe: a classification head on the unchanged model) is refused, from its
    JSON alone."""
    for path in paths or []:
        method = peek_adapter(path).get("method")
        if getattr(METHODS.get(method), "frozen_features", False):
            raise MinillamaError(f"--load_adapter {path}: a {method} adapter is a classification head on the "
                                 f"unchanged model, which {run} does not read: evaluate it with --option {method} on "
                                 "its classification files")


def check_saved_adapterhub_exportable(path: str):
    """check_adapterhub_exportable for a saved adapter (--load_adapter A --export_adapterhub DIR), from
    its JSON alone (a PEFT directory never holds a bottleneck adapter)."""
    check_adapterhub_exportable(peek_adapter(path).get("method") or "a PEFT adapter")


def check_saved_exportable(path: str):
    """check_exportable for a saved adapter (--load_adapter A --export_peft DIR), from its JSON alone."""
    meta = peek_adapter(path)
    if meta.get("method"):
        check_exportable(meta["method"], meta.get("config") or {})
