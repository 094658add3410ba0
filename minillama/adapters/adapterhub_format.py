"""AdapterHub (the `adapters` library) saved-adapter directories, both ways: the bottleneck
method's (adapters/bottleneck.py) own interop, the one method whose adapters this layout holds.

`model.save_adapter(DIR, name)` of adapters 1.x on a transformers LlamaForCausalLM writes

    adapter_config.json   {"config": <the BnConfig, every field>, "hidden_size", "model_type": "llama",
                           "model_class", "model_name", "name", "version": "adapters.<version>"}
    pytorch_adapter.bin   torch.save of the adapter's tensors, named
        model.layers.{i}.attention_adapters.adapters.{name}.adapter_down.0.{weight,bias}   houlsby only
        model.layers.{i}.attention_adapters.adapters.{name}.adapter_up.{weight,bias}
        model.layers.{i}.output_adapters.adapters.{name}.adapter_down.0.{weight,bias}
        model.layers.{i}.output_adapters.adapters.{name}.adapter_up.{weight,bias}

(and head_config.json + pytorch_model_head.bin for the model's own LM head, which an adapter
does not change: not written here).  Houlsby is AdapterHub's "double_seq_bn" (DoubleSeqBnConfig),
Pfeiffer its "seq_bn" (SeqBnConfig); adapters/bottleneck.py places them as those configs do, so
the tensors carry over unchanged.  `export_adapterhub` writes such a directory (with minillama's
base identity as one more top-level key, which AdapterHub ignores); `load_adapterhub` reads one
back (the .bin with weights_only=True, or adapter.safetensors), refusing in one line every config
field minillama's two configs do not have.
"""
from __future__ import annotations

import io
import json
import os
import re
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import MinillamaError
from ..files import atomic_write_group, check_output_dir, contents
from .base import AdaptedModel
from .bottleneck import NON_LINEARITIES, Bottleneck, BottleneckConfig
from .identity import base_identity, check_base, check_finite
from .registry import attach

CONFIG_FILE, WEIGHTS_FILE, SAFE_WEIGHTS_FILE = "adapter_config.json", "pytorch_adapter.bin", "adapter.safetensors"
IDENTITY_KEY = "minillama_base"
NAME = "bottleneck"  # the adapter's name in the directory (AdapterHub's load_adapter returns it)
VERSION = "adapters.1.3.0"  # the release whose layout this is (tests/adapterhub_oracle.py)
OUR_SITES = {"attention_adapters": "attention_adapter", "output_adapters": "output_adapter"}
THEIR_SITES = {ours: theirs for theirs, ours in OUR_SITES.items()}
PARTS = {"adapter_down.0": "down", "adapter_up": "up"}
KEY = re.compile(r"^model\.layers\.(\d+)\.(attention_adapters|output_adapters)\.adapters\.([^.]+)\."
                 r"(adapter_down\.0|adapter_up)\.(weight|bias)$")

# BnConfig's fields as DoubleSeqBnConfig / SeqBnConfig set them (adapters 1.3.0); the two
# configs differ only in mh_adapter, original_ln_before and non_linearity (set per config below).
BN_FIELDS = {
    "output_adapter": True, "original_ln_after": True, "ln_before": False, "ln_after": False,
    "init_weights_seed": None, "is_parallel": False, "scaling": 1.0, "use_gating": False,
    "residual_before_ln": True, "adapter_residual_before_ln": False, "inv_adapter": None,
    "inv_adapter_reduction_factor": None, "cross_adapter": False, "leave_out": [], "dropout": 0.0,
    "phm_layer": False, "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True,
    "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001, "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True, "stochastic_depth": 0.0,
}
PER_CONFIG = {"houlsby": {"mh_adapter": True, "original_ln_before": False},
              "pfeiffer": {"mh_adapter": False, "original_ln_before": True}}
# What a loaded config must hold for minillama's adapters to compute what AdapterHub's do
# (the rest of BN_FIELDS only matter when training in AdapterHub, or for PHM layers, checked too).
MUST_MATCH = ("output_adapter", "original_ln_after", "ln_before", "ln_after", "is_parallel", "scaling",
              "use_gating", "residual_before_ln", "adapter_residual_before_ln", "inv_adapter", "cross_adapter",
              "leave_out", "phm_layer", "stochastic_depth")
ACTIVATION_NAMES = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}  # theirs -> ours


def peek_adapterhub(path: str) -> dict:
    """What io.peek_adapter says of an AdapterHub directory before any model loads."""
    return {"method": Bottleneck.method, "config": {}, "label_names": None}


def is_adapterhub_dir(path: str) -> bool:
    """A directory whose adapter_config.json is AdapterHub's (a "config" entry, no PEFT "peft_type")."""
    config = os.path.join(path, CONFIG_FILE)
    if not (os.path.isdir(path) and os.path.isfile(config)):
        return False
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False  # PEFT's reader gives the error in its words
    return isinstance(data, dict) and "config" in data and "peft_type" not in data


# -- minillama -> AdapterHub --------------------------------------------------------------------
def bn_config(cfg: BottleneckConfig) -> dict:
    """The BnConfig dict AdapterHub writes for this config; init_weights says how ours started
    (down as nn.Linear, up zero: AdapterHub's "mam_adapter")."""
    return {**BN_FIELDS, **PER_CONFIG[cfg.config], "reduction_factor": cfg.reduction_factor,
            "non_linearity": cfg.non_linearity, "init_weights": "mam_adapter"}


def to_adapterhub(adapter: Bottleneck, name: str = NAME) -> Dict[str, torch.Tensor]:
    """AdapterHub's tensor names -> tensors (float32, CPU)."""
    out = {}
    for ours, t in adapter.adapter_tensors().items():
        layer, site, part, kind = re.match(r"^layers\.(\d+)\.(\w+)\.(down|up)\.(weight|bias)$", ours).groups()
        theirs = {v: k for k, v in PARTS.items()}[part]
        out[f"model.layers.{layer}.{THEIR_SITES[site]}.adapters.{name}.{theirs}.{kind}"] = \
            t.detach().float().contiguous().cpu()
    return out


def check_adapterhub_exportable(method: Optional[str], flag: str = "--export_adapterhub"):
    if method is not None and method != Bottleneck.method:
        raise MinillamaError(f"{flag}: AdapterHub's saved-adapter layout is written for bottleneck adapters "
                             f"(--option bottleneck), not {method}")


def check_adapterhub_dir(directory: Optional[str], flag: str = "--export_adapterhub"):
    """Before any work: `directory` is, or can be created as, a writable directory."""
    check_output_dir(directory, flag, "the AdapterHub adapter", CONFIG_FILE)


def export_adapterhub(adapter: AdaptedModel, directory: str, model_name: Optional[str] = None) -> int:
    """Write `adapter` (a Bottleneck) as AdapterHub's saved adapter; returns the bytes written."""
    check_adapterhub_exportable(adapter.method)
    check_adapterhub_dir(directory)
    config = {"config": bn_config(adapter.cfg), "hidden_size": adapter.config.dim, "model_type": "llama",
              "model_class": "LlamaForCausalLM", "model_name": model_name, "name": NAME, "version": VERSION,
              IDENTITY_KEY: base_identity(adapter.base)}
    buffer = io.BytesIO()
    torch.save(to_adapterhub(adapter), buffer)
    created = not os.path.isdir(directory)
    os.makedirs(directory, exist_ok=True)
    weights, config_path = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, CONFIG_FILE)
    try:  # one unit, the config that makes the directory loadable last
        atomic_write_group([(weights, contents(buffer.getvalue())),
                            (config_path, contents(json.dumps(config, indent=2, sort_keys=True)))])
    except BaseException:
        if created and not os.listdir(directory):
            os.rmdir(directory)
        raise
    return os.path.getsize(weights) + os.path.getsize(config_path)


def export_adapterhub_for_task(adapter: AdaptedModel, directory: str, model_path: str,
                               head_left_out: bool = False) -> int:
    """--export_adapterhub of a task: export, and say what AdapterHub needs besides and what stays behind."""
    nbytes = export_adapterhub(adapter, directory, os.path.abspath(model_path))
    print(f"exported the bottleneck adapter in AdapterHub's layout to {directory} ({nbytes:,} bytes); adapters "
          f"loads it onto {model_path} written as a Hugging Face directory (formats.hf.save_hf_dir), "
          "a transformers LlamaForCausalLM")
    if head_left_out:
        print("note: the classification head is left out of the AdapterHub export; it travels in minillama's own "
              "adapter file (--save_adapter)")
    if adapter.config.norm != "rmsnorm":
        print("note: this base uses LayerNorm, which Hugging Face's Llama does not have: AdapterHub would run the "
              "adapter on an RMSNorm model (train with --norm rmsnorm to export)")
    return nbytes


# -- AdapterHub -> minillama --------------------------------------------------------------------
def read_adapterhub_dir(directory: str) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors): pytorch_adapter.bin read with weights_only=True, else adapter.safetensors."""
    from ..formats.common import load_torch_file, read_json
    config_path = os.path.join(directory, CONFIG_FILE)
    config = read_json(config_path)
    if not isinstance(config.get("config"), dict):
        raise MinillamaError(f"{config_path}: its 'config' is not an adapter configuration: re-save the adapter "
                             "with adapters' save_adapter")
    bin_path, safe_path = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, SAFE_WEIGHTS_FILE)
    if os.path.isfile(bin_path):
        tensors = load_torch_file(bin_path)
        where = bin_path
    elif os.path.isfile(safe_path):
        from safetensors.torch import load_file
        try:
            tensors = load_file(safe_path)
        except Exception as e:  # safetensors raises several types for a damaged file
            raise MinillamaError(f"{safe_path}: unreadable adapter tensors, truncated or corrupt "
                                 f"({str(e).splitlines()[0][:80]}): re-save or re-copy the adapter") from None
        where = safe_path
    else:
        raise MinillamaError(f"{directory}: neither {WEIGHTS_FILE} nor {SAFE_WEIGHTS_FILE} found: an AdapterHub "
                             f"adapter directory holds {CONFIG_FILE} and its weights")
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise MinillamaError(f"{where}: not a dictionary of tensors: re-save the adapter with adapters' save_adapter")
    check_finite(tensors, where)
    return config, tensors


def config_from_adapterhub(config: dict, where: str) -> BottleneckConfig:
    """minillama's config for AdapterHub's BnConfig dict, or one line naming the field it cannot follow."""
    bn = config["config"]
    if bn.get("architecture") not in (None, "bottleneck"):
        raise MinillamaError(f"{where}: an AdapterHub {bn['architecture']} adapter; minillama reads bottleneck "
                             "adapters (seq_bn, double_seq_bn)")
    for name in MUST_MATCH:
        if bn.get(name, BN_FIELDS[name]) != BN_FIELDS[name]:
            raise MinillamaError(f"{where}: config field {name}={bn.get(name)!r} is not what seq_bn / double_seq_bn "
                                 f"have ({BN_FIELDS[name]!r}); minillama reads those two configs")
    placement = (bn.get("mh_adapter"), bn.get("original_ln_before"))
    kinds = {(v["mh_adapter"], v["original_ln_before"]): k for k, v in PER_CONFIG.items()}
    if placement not in kinds:
        raise MinillamaError(f"{where}: mh_adapter={placement[0]}, original_ln_before={placement[1]} is neither "
                             "double_seq_bn (true, false: houlsby) nor seq_bn (false, true: pfeiffer)")
    factor, act = bn.get("reduction_factor"), ACTIVATION_NAMES.get(str(bn.get("non_linearity")).lower())
    if isinstance(factor, float) and factor.is_integer():
        factor = int(factor)
    if isinstance(factor, bool) or not isinstance(factor, int):
        raise MinillamaError(f"{where}: reduction_factor {factor!r}: minillama reads one whole-number factor "
                             "for every layer")
    if act not in NON_LINEARITIES:
        raise MinillamaError(f"{where}: non_linearity {bn.get('non_linearity')!r}: minillama has "
                             f"{', '.join(NON_LINEARITIES)}")
    return BottleneckConfig(config=kinds[placement], reduction_factor=factor, non_linearity=act)


def load_adapterhub(base: nn.Module, directory: str, tokenizer=None) -> AdaptedModel:
    """The AdapterHub adapter in `directory`, attached to `base`, frozen, with `.adapter_meta`
    (its config, as minillama's) and `.head_state` ({}: the LM head is the base's)."""
    config, found = read_adapterhub_dir(directory)
    where = os.path.join(directory, CONFIG_FILE)
    if config.get("model_type", "llama") != "llama":
        raise MinillamaError(f"{where}: an adapter for a {config['model_type']} model; minillama is a Llama")
    if isinstance(config.get(IDENTITY_KEY), dict):  # exported by minillama: the identity check of its own files
        check_base({"base": config[IDENTITY_KEY]}, base, directory, where=where)
    elif config.get("hidden_size") not in (None, base.config.dim):
        raise MinillamaError(f"{where}: an adapter for hidden_size {config['hidden_size']}, but this model's width "
                             f"is {base.config.dim}: load it onto the base it was trained on")
    cfg = config_from_adapterhub(config, where)
    model = attach(base, cfg, tokenizer)
    ours = {}
    for key, t in found.items():
        match = KEY.match(key)
        if match is None:
            raise MinillamaError(f"{directory}: tensor {key!r} is not a bottleneck adapter's "
                                 "(model.layers.<i>.<attention|output>_adapters.adapters.<name>.adapter_down.0/up)")
        layer, site, _, part, kind = match.groups()
        ours[f"layers.{layer}.{OUR_SITES[site]}.{PARTS[part]}.{kind}"] = t
    expected = model.expected_tensors()
    for name, target in expected.items():
        if name not in ours:
            raise MinillamaError(f"{directory}: lacks the tensor of {name} for a {cfg.config} adapter on "
                                 f"{base.config.n_layers} layers: is it for this base?")
        if tuple(ours[name].shape) != tuple(target.shape):
            raise MinillamaError(f"{directory}: {name} has shape {tuple(ours[name].shape)}, but this model "
                                 f"needs {tuple(target.shape)}: load it onto the base it was trained on")
    extra = sorted(set(ours) - set(expected))
    if extra:
        raise MinillamaError(f"{directory}: tensor {extra[0]} has no place on this {base.config.n_layers}-layer "
                             f"model ({cfg.config}): load it onto the base it was trained on")
    model.load_adapter_tensors(ours)
    model.finalize().requires_grad_(False)
    model.adapter_meta = {"method": model.method, "config": cfg.to_dict(), "adapterhub": config, "label_names": None}
    model.head_state = {}
    return model
