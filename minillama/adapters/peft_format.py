"""Adapters in Hugging Face PEFT's format, both ways: a directory holding
adapter_config.json (the PEFT config) + adapter_model.safetensors (the tensors), which
`peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(hf_dir), DIR)` loads,
hf_dir being the base written by `formats.hf.save_hf_dir`.

    minillama        PEFT peft_type     tensors, PEFT names and shapes
    lora             LORA               base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]
                                        ... .lora_B.weight [out, r]   (q/k/v/o_proj, mlp.gate/up/down_proj)
    prefix, ptuning2 PREFIX_TUNING      prompt_embeddings [P, L * 2 * KV * hd]: the folded prefix as PEFT's
                                        past key values (prefix_projection false: nothing left to fold)
    prompt           PROMPT_TUNING      prompt_embeddings [P, dim]
    adapter          ADAPTION_PROMPT    base_model.model.model.layers.{i}.self_attn.adaption_prompt [1, P, dim]
                                        ... .adaption_gate [1]   (the top adapter_layers layers)

Layouts.  Hugging Face stores q_proj/k_proj with each head's rows permuted for its
"rotate half" RoPE (formats/hf.py).  Whatever lands in q/k coordinates is permuted the
same way: the rows of a LoRA B on wq/wk (B A is a [out, in] weight update), and a
prefix's keys (already-rotated keys, in the coordinates HF's cache holds).  Values, wo
and the feed-forward are not permuted; LLaMA-Adapter's prompt lives in the hidden space
(its keys come from the model's own k_proj), so it needs nothing.  GQA: a prefix keeps
n_kv_heads keys per layer (PEFT's token_dim = KV * hd, num_attention_heads = KV).

Base identity.  A PEFT directory names its base only as `base_model_name_or_path` (a hub
id or a path, often not on this machine).  Loading checks, in order:
1. directories minillama exported carry minillama's base identity in the safetensors
   metadata: checked exactly as for minillama's own files (another shape refused, other
   weights of the same shape warned);
2. otherwise, when `base_model_name_or_path` is a local Hugging Face directory, its config.json
   must describe this architecture (refused otherwise) and its embeddings must be this
   model's (warned otherwise), as in 1;
3. always, every tensor's shape (and the config's sizes) against what this model needs
   (n_layers, dim, kv heads, ...): another shape is refused, in one line.
A classification head never travels here (PEFT's causal-LM adapters have no place for
it); it stays in minillama's own adapter files.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import MinillamaError, warn
from ..files import atomic_write_group, check_output_dir, contents
from ..formats.hf import HF_LAYER_NAMES, hf_to_meta_qk, meta_to_hf_qk
from .base import AdaptedModel
from .identity import SHAPE_KEYS, base_identity, check_base, check_finite
from .lora import TARGET_PARENTS
from .registry import attach

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's names: PeftModel.base_model (the tuner) .model (LlamaForCausalLM)
IDENTITY_KEY = "minillama_base"    # safetensors metadata written by export_peft
TASK_TYPE = "CAUSAL_LM"
# minillama projection ("attention.wq") -> HF module ("self_attn.q_proj"), from the weight-name table
HF_MODULES = {ours[: -len(".weight")]: theirs[: -len(".weight")] for theirs, ours in HF_LAYER_NAMES.items()
              if ours.split(".")[1] in TARGET_PARENTS}
LORA_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$")
ADAPTION_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.self_attn\.adaption_(prompt|gate)$")


def is_peft_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


# -- layouts ----------------------------------------------------------------------------------
def qk_rows(name: str, config) -> Optional[int]:
    """Heads whose rows HF permutes in projection `name` (wq: H, wk: KV), else None."""
    return {"wq": config.n_heads, "wk": config.n_kv_heads}.get(name)


def keys_to_hf(keys: torch.Tensor, to_hf: bool = True) -> torch.Tensor:
    """Prefix keys [L, KV, P, hd] between minillama's adjacent-pair coordinates and HF's
    halves: the row permutation of formats/hf.py applied to each head's hd coordinates."""
    L, KV, P, hd = keys.shape
    rows = keys.permute(0, 1, 3, 2).reshape(L * KV * hd, P)  # one "head" of hd rows per (layer, kv head)
    permuted = (meta_to_hf_qk if to_hf else hf_to_meta_qk)(rows, L * KV)
    return permuted.view(L, KV, hd, P).permute(0, 1, 3, 2)


def prefix_to_flat(kv: torch.Tensor) -> torch.Tensor:
    """minillama's prefix [L, 2, KV, P, hd] -> PEFT's prompt_embeddings [P, L * 2 * KV * hd]."""
    kv = torch.stack([keys_to_hf(kv[:, 0]), kv[:, 1]], dim=1)
    return kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)


def flat_to_prefix(flat: torch.Tensor, config) -> torch.Tensor:
    """PEFT's prompt_embeddings [P, L * 2 * KV * hd] -> minillama's prefix [L, 2, KV, P, hd]."""
    c = config
    kv = flat.reshape(flat.shape[0], c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
    return torch.stack([keys_to_hf(kv[:, 0], to_hf=False), kv[:, 1]], dim=1)


# -- per method: minillama -> PEFT ------------------------------------------------------------
def peft_target_modules(targets) -> List[str]:
    """minillama's LoRA targets as PEFT's target_modules: ('wq', 'w1') -> ['q_proj', 'gate_proj']."""
    return [HF_MODULES[f"{TARGET_PARENTS[t]}.{t}"].split(".")[1] for t in targets]


def lora_to_peft(adapter: AdaptedModel) -> Tuple[dict, Dict[str, torch.Tensor]]:
    c, cfg = adapter.config, adapter.cfg
    tensors = {}
    for name, t in adapter.adapter_tensors().items():  # layers.{i}.attention.wq.lora_A
        layer, parent, proj, part = name.split(".")[1:]
        if part == "lora_B" and qk_rows(proj, c):
            t = meta_to_hf_qk(t, qk_rows(proj, c))
        tensors[f"{PEFT_PREFIX}model.layers.{layer}.{HF_MODULES[parent + '.' + proj]}.{part}.weight"] = t
    targets = peft_target_modules(cfg.targets)
    return {"peft_type": "LORA", "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
            "use_dora": False}, tensors


def prefix_to_peft(adapter: AdaptedModel) -> Tuple[dict, Dict[str, torch.Tensor]]:
    c = adapter.config
    flat = prefix_to_flat(adapter.prefix_tensor())  # prefix tuning: its MLP's value, folded
    return {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": adapter.length, "num_layers": c.n_layers,
            "token_dim": c.kv_dim, "num_attention_heads": c.n_kv_heads, "num_transformer_submodules": 1,
            "prefix_projection": False, "encoder_hidden_size": c.dim}, {"prompt_embeddings": flat}


def prompt_to_peft(adapter: AdaptedModel) -> Tuple[dict, Dict[str, torch.Tensor]]:
    c = adapter.config
    return {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": adapter.length, "token_dim": c.dim,
            "num_layers": c.n_layers, "num_attention_heads": c.n_heads, "num_transformer_submodules": 1,
            "prompt_tuning_init": "RANDOM"}, {"prompt_embeddings": adapter.prompt}


def adapter_to_peft(adapter: AdaptedModel) -> Tuple[dict, Dict[str, torch.Tensor]]:
    tensors = {}
    for i, attn in adapter.prompted().items():
        tensors[f"{PEFT_PREFIX}model.layers.{i}.self_attn.adaption_prompt"] = attn.prompt[None]
        tensors[f"{PEFT_PREFIX}model.layers.{i}.self_attn.adaption_gate"] = attn.gate
    return {"peft_type": "ADAPTION_PROMPT", "adapter_len": adapter.length, "adapter_layers": adapter.cfg.layers,
            "target_modules": "self_attn"}, tensors


TO_PEFT: Dict[str, Callable] = {"lora": lora_to_peft, "prefix": prefix_to_peft, "ptuning2": prefix_to_peft,
                                "prompt": prompt_to_peft, "adapter": adapter_to_peft}


def check_exportable(method: str, config: dict):
    """Whether PEFT has a format for an adapter of `method` with `config` (AdapterConfig.to_dict()),
    decidable from the flags alone: checked before anything trains or loads."""
    if method not in TO_PEFT:
        raise MinillamaError(f"--export_peft: {method} has no PEFT adapter "
                             + ("(every weight trained: save the whole model with formats.hf.save_hf_dir)"
                                if method == "finetune" else f"(PEFT formats: {', '.join(TO_PEFT)})"))
    if method == "adapter" and config.get("gate", "scalar") != "scalar":
        raise MinillamaError(f"--export_peft: PEFT's AdaptionPrompt has one plain gate per layer; this adapter "
                             f"has --adapter_gate {config['gate']}: train with --adapter_gate scalar to export it")


def check_export_dir(directory: Optional[str], flag: str = "--export_peft"):
    """Before any work: `directory` is, or can be created as, a writable directory."""
    check_output_dir(directory, flag, "the PEFT adapter", CONFIG_FILE)


def export_peft(adapter: AdaptedModel, directory: str, base_path: Optional[str] = None) -> int:
    """Write `adapter` as a PEFT directory (adapter_config.json + adapter_model.safetensors);
    base_path becomes base_model_name_or_path.  Returns the bytes written."""
    from safetensors.torch import save
    check_exportable(adapter.method, adapter.cfg.to_dict())
    check_export_dir(directory)
    peft_config, tensors = TO_PEFT[adapter.method](adapter)
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


# -- per method: PEFT -> minillama ------------------------------------------------------------
# Each takes (peft config, tensors, base, where) and returns (minillama config, {minillama name: tensor}).
def field(cfg: dict, name: str, where: str, kind=int):
    value = cfg.get(name)
    if value is None:
        raise MinillamaError(f"{where}/{CONFIG_FILE} lacks field {name!r} that PEFT's {cfg['peft_type']} "
                             "config needs: re-save the adapter with peft")
    if kind is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or
                             (kind is int and value != int(value))):
        raise MinillamaError(f"{where}/{CONFIG_FILE}: field {name!r} must be a number, got {value!r}")
    return kind(value) if kind is not None else value


def other_base(where: str, found: str, needed: str, base) -> MinillamaError:
    """The one message for an adapter whose sizes are not this model's."""
    c = base.config
    return MinillamaError(f"{where}: PEFT adapter made for another base: {found}, but this model "
                          f"(n_layers={c.n_layers}, dim={c.dim}, n_heads={c.n_heads}, n_kv_heads={c.n_kv_heads}) "
                          f"needs {needed}: load it onto the base it was trained on")


def tensor(tensors: Dict[str, torch.Tensor], name: str, shape: tuple, where: str, base,
           from_config: int = 0) -> torch.Tensor:
    """tensors[name], checked to be `shape`; its first `from_config` sizes come from the
    adapter's own config (e.g. num_virtual_tokens), so disagreeing there means the two files
    do not belong together, elsewhere that the adapter is another base's."""
    if name not in tensors:
        raise MinillamaError(f"{where}/{WEIGHTS_FILE} lacks tensor {name!r} that its {CONFIG_FILE} implies: "
                             "re-save the adapter with peft")
    t = tensors[name]
    if tuple(t.shape) == tuple(shape):
        return t
    if tuple(t.shape[from_config:]) == tuple(shape[from_config:]):
        raise MinillamaError(f"{where}: tensor {name} has shape {tuple(t.shape)}, but {CONFIG_FILE} implies "
                             f"{tuple(shape)}: the two files do not belong together")
    raise other_base(where, f"tensor {name} has shape {tuple(t.shape)}", f"shape {tuple(shape)}", base)


def lora_from_peft(cfg: dict, tensors: dict, base, where: str):
    from .lora import LoraConfig
    unsupported = {k: cfg.get(k) for k in ("use_dora", "fan_in_fan_out", "lora_bias") if cfg.get(k)}
    unsupported.update({k: cfg[k] for k in ("rank_pattern", "alpha_pattern", "modules_to_save") if cfg.get(k)})
    if cfg.get("bias", "none") != "none":
        unsupported["bias"] = cfg["bias"]
    if unsupported:
        k, v = next(iter(unsupported.items()))
        raise MinillamaError(f"{where}/{CONFIG_FILE}: LoRA with {k}={v!r} is not minillama's LoRA "
                             "(plain rank-r updates of whole projections): retrain without it")
    rank, alpha = field(cfg, "r", where), field(cfg, "lora_alpha", where, float)
    field(cfg, "target_modules", where, kind=None)
    if cfg.get("use_rslora"):  # scaling alpha / sqrt(r) is minillama's alpha' / r with alpha' = alpha sqrt(r)
        alpha *= math.sqrt(rank)
    ours_of = {theirs.split(".")[1]: ours for ours, theirs in HF_MODULES.items()}  # q_proj -> attention.wq
    c, found = base.config, {}
    for name, t in tensors.items():
        m = LORA_KEY.match(name)
        if not m or m.group(3) not in ours_of:
            raise MinillamaError(f"{where}/{WEIGHTS_FILE}: tensor {name!r} is not a LoRA factor of a Llama "
                                 "projection minillama knows (q/k/v/o_proj, gate/up/down_proj)")
        layer = int(m.group(1))
        if layer >= c.n_layers:
            raise other_base(where, f"tensor {name} is for layer {layer}", f"layers 0..{c.n_layers - 1}", base)
        found[f"layers.{layer}.{ours_of[m.group(3)]}.lora_{m.group(4)}"] = (name, t)
    targets = tuple(t for t in TARGET_PARENTS if any(k.split(".")[3] == t for k in found))
    if not targets:
        raise MinillamaError(f"{where}/{WEIGHTS_FILE} holds no LoRA factors: re-save the adapter with peft")
    for name in found:  # A without B (or B without A) is half an update
        twin = name[:-1] + ("B" if name.endswith("A") else "A")
        if twin not in found:
            raise MinillamaError(f"{where}/{WEIGHTS_FILE} has {found[name][0]!r} but not its other LoRA factor: "
                                 "re-save the adapter with peft")
    cfg_out = LoraConfig(rank=rank, alpha=alpha, dropout=float(cfg.get("lora_dropout") or 0.0), targets=targets)
    return cfg_out, found


def lora_tensors_from_peft(model: AdaptedModel, found: Dict[str, tuple], base, where: str) -> Dict[str, torch.Tensor]:
    """{minillama name: (PEFT name, tensor)} -> the factors to load: shapes checked, the q/k row
    permutation undone, and zeros (no update) where PEFT left a layer out (layers_to_transform)."""
    out = {}
    for name, target in model.expected_tensors().items():
        if name not in found:
            out[name] = torch.zeros(target.shape)
            continue
        peft_name, t = found[name]
        t = tensor({peft_name: t}, peft_name, tuple(target.shape), where, base)
        proj = name.split(".")[3]
        out[name] = hf_to_meta_qk(t, qk_rows(proj, base.config)) if name.endswith("B") and qk_rows(
            proj, base.config) else t
    return out


def prefix_from_peft(cfg: dict, tensors: dict, base, where: str):
    from .prefix import PrefixConfig
    c, P = base.config, field(cfg, "num_virtual_tokens", where)
    for key, want in (("num_layers", c.n_layers), ("token_dim", c.kv_dim), ("num_attention_heads", c.n_kv_heads)):
        if cfg.get(key) is not None and cfg[key] != want:
            raise other_base(where, f"{CONFIG_FILE} has {key} {cfg[key]}", f"{key} {want}", base)
    if cfg.get("num_transformer_submodules", 1) != 1:
        raise MinillamaError(f"{where}/{CONFIG_FILE}: num_transformer_submodules "
                             f"{cfg['num_transformer_submodules']} is an encoder-decoder prefix, not a Llama's")
    flat = tensor(tensors, "prompt_embeddings", (P, c.n_layers * 2 * c.kv_dim), where, base, from_config=1)
    return PrefixConfig(length=P), {"prefix": flat_to_prefix(flat, c)}


def prompt_from_peft(cfg: dict, tensors: dict, base, where: str):
    from .prompt import PromptTuningConfig
    P = field(cfg, "num_virtual_tokens", where)
    if cfg.get("num_transformer_submodules", 1) != 1:
        raise MinillamaError(f"{where}/{CONFIG_FILE}: num_transformer_submodules "
                             f"{cfg['num_transformer_submodules']} is an encoder-decoder prompt, not a Llama's")
    return PromptTuningConfig(length=P), {"prefix": tensor(tensors, "prompt_embeddings", (P, base.config.dim),
                                                           where, base, from_config=1)}


def adapter_from_peft(cfg: dict, tensors: dict, base, where: str):
    from .llama_adapter import LlamaAdapterConfig
    c = base.config
    P, layers = field(cfg, "adapter_len", where), field(cfg, "adapter_layers", where)
    if cfg.get("target_modules", "self_attn") != "self_attn":
        raise MinillamaError(f"{where}/{CONFIG_FILE}: AdaptionPrompt on {cfg['target_modules']!r}: minillama "
                             "adapts the attention (self_attn) of Llama blocks")
    if layers > c.n_layers:
        raise MinillamaError(f"{where}/{CONFIG_FILE}: adapter_layers {layers} is above this model's {c.n_layers} "
                             "layers: load it onto the base it was trained on")
    by_layer = {}
    for name in tensors:
        m = ADAPTION_KEY.match(name)
        if not m:
            raise MinillamaError(f"{where}/{WEIGHTS_FILE}: tensor {name!r} is not an adaption prompt or gate")
        by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = name
    out = {}
    for i in range(c.n_layers - layers, c.n_layers):
        names = by_layer.get(i, {})
        if set(names) != {"prompt", "gate"}:
            raise other_base(where, f"its prompts sit in layers {sorted(by_layer)}",
                             f"the top {layers} layers {list(range(c.n_layers - layers, c.n_layers))}", base)
        out[f"layers.{i}.prompt"] = tensor(tensors, names["prompt"], (1, P, c.dim), where, base, from_config=2)[0]
        out[f"layers.{i}.gate"] = tensor(tensors, names["gate"], (1,), where, base)
    return LlamaAdapterConfig(length=P, layers=layers), out


FROM_PEFT: Dict[str, Callable] = {"LORA": lora_from_peft, "PREFIX_TUNING": prefix_from_peft,
                                  "PROMPT_TUNING": prompt_from_peft, "ADAPTION_PROMPT": adapter_from_peft}


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
    if kind not in FROM_PEFT:
        raise MinillamaError(f"{directory}: PEFT method {kind} is not supported (minillama reads "
                             f"{', '.join(FROM_PEFT)})")
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
    method_cfg, ours = FROM_PEFT[kind](cfg, tensors, base, directory)
    model = attach(base, method_cfg, tokenizer)
    if kind == "LORA":
        ours = lora_tensors_from_peft(model, ours, base, directory)
    model.load_adapter_tensors(ours)
    model.finalize().requires_grad_(False)
    model.adapter_meta = {"method": model.method, "config": method_cfg.to_dict(), "peft": cfg, "label_names": None}
    model.head_state = {}
    return model


__all__ = ["export_peft", "export_for_task", "load_peft", "is_peft_dir", "check_export_dir", "check_exportable"]
