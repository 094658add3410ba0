"""LoRA (adapters/lora.py) in Hugging Face PEFT's format, peft_type LORA, both ways:

    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]
    ... .lora_B.weight [out, r]   (q/k/v/o_proj, mlp.gate/up/down_proj)

Hugging Face stores q_proj/k_proj with each head's rows permuted for its "rotate half"
RoPE (formats/hf.py).  B A is a [out, in] update of such a weight, so the rows of B on
wq/wk are permuted the same way; A (the input side) and the other projections are not.
Read back: rslora's scaling alpha / sqrt(r) is minillama's alpha' / r with
alpha' = alpha sqrt(r), and a layer PEFT left out (layers_to_transform) gets a zero update.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional

import torch

from ..errors import MinillamaError
from ..formats.hf import HF_LAYER_NAMES, hf_to_meta_qk, meta_to_hf_qk
from .lora_config import TARGET_PARENTS, LoraConfig
from .peft_convert import CONFIG_FILE, PEFT_PREFIX, WEIGHTS_FILE, PeftConverter, field, other_base, tensor

# minillama projection ("attention.wq") -> HF module ("self_attn.q_proj"), from the weight-name table
HF_MODULES = {ours[: -len(".weight")]: theirs[: -len(".weight")] for theirs, ours in HF_LAYER_NAMES.items()
              if ours.split(".")[1] in TARGET_PARENTS}
LORA_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$")


def qk_rows(name: str, config) -> Optional[int]:
    """Heads whose rows HF permutes in projection `name` (wq: H, wk: KV), else None."""
    return {"wq": config.n_heads, "wk": config.n_kv_heads}.get(name)


def peft_target_modules(targets) -> List[str]:
    """minillama's LoRA targets as PEFT's target_modules: ('wq', 'w1') -> ['q_proj', 'gate_proj']."""
    return [HF_MODULES[f"{TARGET_PARENTS[t]}.{t}"].split(".")[1] for t in targets]


class LoraPeft(PeftConverter):
    peft_type = "LORA"

    def to_peft(self, adapter):
        c, cfg = adapter.config, adapter.cfg
        tensors = {}
        for name, t in adapter.adapter_tensors().items():  # layers.{i}.attention.wq.lora_A
            layer, parent, proj, part = name.split(".")[1:]
            if part == "lora_B" and qk_rows(proj, c):
                t = meta_to_hf_qk(t, qk_rows(proj, c))
            tensors[f"{PEFT_PREFIX}model.layers.{layer}.{HF_MODULES[parent + '.' + proj]}.{part}.weight"] = t
        return {"peft_type": self.peft_type, "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
                "target_modules": peft_target_modules(cfg.targets), "bias": "none", "fan_in_fan_out": False,
                "use_rslora": False, "use_dora": False}, tensors

    def from_peft(self, cfg, tensors, base, where):
        """(LoraConfig, {minillama name: (PEFT name, tensor)}): the factors found, paired."""
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
                raise MinillamaError(f"{where}/{WEIGHTS_FILE} has {found[name][0]!r} but not its other LoRA "
                                     "factor: re-save the adapter with peft")
        lora = LoraConfig(rank=rank, alpha=alpha, dropout=float(cfg.get("lora_dropout") or 0.0), targets=targets)
        return lora, found

    def fit(self, model, found, where) -> Dict[str, torch.Tensor]:
        """The factors to load: shapes checked, the q/k row permutation undone, and zeros (no
        update) where PEFT left a layer out (layers_to_transform)."""
        base, out = model.base, {}
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
