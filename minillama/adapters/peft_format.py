"""Adapters in Hugging Face PEFT's format, both ways: a directory holding
adapter_config.json (the PEFT config) + adapter_model.safetensors (the tensors), which
`peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(hf_dir), DIR)` loads,
hf_dir being the base written by `formats.hf.save_hf_dir`.

This module is the directory: its two files, the fields every PEFT config has (peft_type,
task_type CAUSAL_LM, base_model_name_or_path), the base identity, and the dispatch.  What a
method's config and tensors are in PEFT's layout is that method's converter
(adapters/peft_convert.py's `PeftConverter`), written beside the method as
adapters/<method>_peft.py and declared in its registry line (adapters/registry.py, `peft=`).
A method without one has no PEFT format: --export_peft refuses it, naming those that have one.

Base identity.  A PEFT directory names its base only as `base_model_name_or_path` (a hub
id or a path, often not on this machine).  Loading checks, in order:
1. directories minillama exported carry minillama's base identity in the safetensors
   metadata: checked exactly as for minillama's own files (another shape refused, other
   weights of the same shape warned);
2. otherwise, when `base_model_name_or_path` is a local Hugging Face directory, its config.json
   must describe this architecture (refused otherwise) and its embeddings must be this
   model's (warned otherwise), as in 1;
3. always, every tensor's shape (and the config's sizes) against what this model needs
   (n_layers, dim, kv heads, ...): another shape is refused, in one line (by the converter).
A classification head never travels here (PEFT's causal-LM adapters have no place for
it); it stays in minillama's own adapter files.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import MinillamaError, warn
from ..files import atomic_write_group, check_output_dir, contents
from .base import AdaptedModel
from .identity import SHAPE_KEYS, base_identity, check_base, check_finite
from .peft_convert import CONFIG_FILE, WEIGHTS_FILE, PeftConverter
from .registry import REGISTRY, attach

IDENTITY_KEY = "minillama_base"    # safetensors metadata written by export_peft
TASK_TYPE = "CAUSAL_LM"
# Derived from the registry, not written here: method -> its converter, PEFT's peft_type -> converter
CONVERTERS: Dict[str, PeftConverter] = {name: m.peft for name, m in REGISTRY.items() if m.peft is not None}
BY_PEFT_TYPE: Dict[str, PeftConverter] = {conv.peft_type: conv for conv in CONVERTERS.values()}


def is_peft_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def check_exportable(method: str, config: dict):
    """Whether PEFT has a format for an adapter of `method` with `config` (AdapterConfig.to_dict()),
    decidable from the flags alone: checked before anything trains or loads."""
    if method not in CONVERTERS:
        raise MinillamaError(f"--export_peft: {method} has no PEFT adapter (PEFT has a format for "
                             f"{', '.join(CONVERTERS)}; every other method stays in minillama's own files)")
    CONVERTERS[method].check_exportable(config)


def check_export_dir(directory: Optional[str], flag: str = "--export_peft"):
    """Before any work: `directory` is, or can be created as, a writable directory."""
    check_output_dir(directory, flag, "the PEFT adapter", CONFIG_FILE)


def export_peft(adapter: AdaptedModel, directory: str, base_path: Optional[str] = None) -> int:
    """Write `adapter` as a PEFT directory (adapter_config.json + adapter_model.safetensors);
    base_path becomes base_model_name_or_path.  Returns the bytes written."""
    from safetensors.torch import save
    check_exportable(adapter.method, adapter.cfg.to_dict())
    check_export_dir(directory)
    peft_config, tensors = CONVERTERS[adapter.method].to_peft(adapter)
    peft_config.update(task_type=TASK_TYPE, inference_mode=True, base_model_name_or_path=base_path)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": "pt", IDENTITY_KEY: json.dumps(base_identity(adapter.base))}
    created = not os.path.isdir(directory)
    os.makedirs(directory, exist_ok=True)
    weights, config = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, CONFIG_FILE)
    try:  # one unit, the config that makes the directory loadable last
        atomic_write_group([(weights, contents(save(tensors, metadata=metadata))),
                            (config, contents(json.dumps(peft_config, indent=2, sort_keys=True)))])
    except BaseException:
        if created and not os.listdir(directory):  # a failed export leaves no empty directory behind
            os.rmdir(directory)
        raise
    return os.path.getsize(weights) + os.path.getsize(config)


def export_for_task(adapter: AdaptedModel, directory: str, model_path: str, head_left_out: bool = False) -> int:
    """--export_peft of a task: export, and say what PEFT needs besides and what stays behind."""
    from ..formats.hf import HF_CONFIG
    base_path = os.path.abspath(model_path) if os.path.isfile(os.path.join(model_path, HF_CONFIG)) else None
    nbytes = export_peft(adapter, directory, base_path)
    where = (f"its base is the Hugging Face directory {base_path}" if base_path else
             f"PEFT loads it onto {model_path} written as a Hugging Face directory (formats.hf.save_hf_dir)")
    print(f"exported the {adapter.method} adapter as a PEFT adapter to {directory} ({nbytes:,} bytes); {where}")
    if head_left_out:
        print("note: the classification head is left out of the PEFT export (a causal-LM adapter has no place "
              "for it); it travels in minillama's own adapter file (--save_adapter)")
    if adapter.config.norm != "rmsnorm":
        print("note: this base uses LayerNorm, which Hugging Face's Llama does not have: PEFT would run the "
              "adapter on an RMSNorm model (train with --norm rmsnorm to export)")
    return nbytes


# -- reading --------------------------------------------------------------------------------------
def read_peft_dir(directory: str) -> Tuple[dict, Dict[str, torch.Tensor], dict]:
    """(adapter_config.json, tensors, safetensors metadata), with one-line errors."""
    from safetensors import SafetensorError, safe_open
    config_path, weights = os.path.join(directory, CONFIG_FILE), os.path.join(directory, WEIGHTS_FILE)
    try:
        with open(config_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise MinillamaError(f"{config_path}: not a readable PEFT config ({type(e).__name__}: {e}); "
                             "re-save the adapter with peft") from None
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise MinillamaError(f"{config_path} lacks field 'peft_type': not a PEFT adapter config")
    if not os.path.isfile(weights):
        bin_hint = " (found adapter_model.bin: re-save it with safetensors)" if os.path.isfile(
            os.path.join(directory, "adapter_model.bin")) else ""
        raise MinillamaError(f"{weights} not found{bin_hint}: a PEFT adapter directory holds "
                             f"{CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        with safe_open(weights, framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise MinillamaError(f"{weights}: unreadable adapter tensors, truncated or corrupt "
                             f"({str(e).splitlines()[0][:80]}): re-save or re-copy the adapter") from None
    check_finite(tensors, weights)
    return cfg, tensors, metadata


def check_named_base(cfg: dict, base: nn.Module, directory: str):
    """Step 2 of the module doc: base_model_name_or_path, when it is a local HF directory."""
    from ..formats.common import read_json
    from ..formats.hf import HF_CONFIG, hf_config, hf_weight_files
    path = cfg.get("base_model_name_or_path")
    if not isinstance(path, str) or not os.path.isfile(os.path.join(path, HF_CONFIG)):
        return
    try:
        named = hf_config(read_json(os.path.join(path, HF_CONFIG)), path)
        files = hf_weight_files(path)
    except MinillamaError:
        return  # not a Llama directory minillama reads: the tensor shapes were checked already
    have = {k: getattr(base.config, k) for k in SHAPE_KEYS}
    want = {k: getattr(named, k) for k in SHAPE_KEYS}
    if want != have:
        raise MinillamaError(f"{directory}: PEFT adapter made for {path} ({', '.join(f'{k}={v}' for k, v in want.items())})"
                             f", but this model has {', '.join(f'{k}={v}' for k, v in have.items())}: "
                             "load it onto the base it was trained on")
    from safetensors import safe_open
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as f:
            if "model.embed_tokens.weight" in f.keys():
                probe = nn.Module()
                probe.config, probe.tok_embeddings = base.config, nn.Embedding.from_pretrained(
                    f.get_tensor("model.embed_tokens.weight"))
                if base_identity(probe)["embedding_fingerprint"] != base_identity(base)["embedding_fingerprint"]:
                    warn(f"{directory}: PEFT adapter was trained on {path}, whose weights differ from "
                                  "this model's (same shape)")
                return


def load_peft(base: nn.Module, directory: str, tokenizer=None) -> AdaptedModel:
    """The PEFT adapter in `directory`, attached to `base`, frozen and finalized, with
    `.adapter_meta` (its config, as minillama's) and `.head_state` ({}: PEFT has no head)."""
    cfg, tensors, metadata = read_peft_dir(directory)
    kind = cfg["peft_type"]
    if kind not in BY_PEFT_TYPE:
        raise MinillamaError(f"{directory}: PEFT method {kind} is not supported (minillama reads "
                             f"{', '.join(BY_PEFT_TYPE)})")
    if cfg.get("task_type") not in (None, TASK_TYPE):
        raise MinillamaError(f"{directory}: a {cfg['task_type']} PEFT adapter; minillama reads causal-LM ones "
                             f"(task_type {TASK_TYPE}), and its classification heads travel in its own adapter files")
    try:
        identity = json.loads(metadata.get(IDENTITY_KEY, "null"))
    except ValueError:
        identity = None
    if isinstance(identity, dict):  # exported by minillama: the identity check of its own files
        check_base({"base": identity}, base, directory, where=directory)
    else:
        check_named_base(cfg, base, directory)
    converter = BY_PEFT_TYPE[kind]
    method_cfg, found = converter.from_peft(cfg, tensors, base, directory)
    model = attach(base, method_cfg, tokenizer)
    model.load_adapter_tensors(converter.fit(model, found, directory))
    model.finalize().requires_grad_(False)
    model.adapter_meta = {"method": model.method, "config": method_cfg.to_dict(), "peft": cfg, "label_names": None}
    model.head_state = {}
    return model


__all__ = ["export_peft", "export_for_task", "load_peft", "is_peft_dir", "check_export_dir", "check_exportable"]
