"""Hugging Face model directories (what `save_pretrained` writes), read and written.

  config.json
  model.safetensors, or the shards listed in model.safetensors.index.json

Two facts make this layout differ from minillama's (= Meta's = llama2.c's)
beyond the names of the tensors:
- RoPE convention.  minillama rotates *adjacent* pairs (0,1), (2,3)...  HF
  rotates the two *halves* of a head (i, i + hd/2).  HF's conversion script
  therefore stored q_proj/k_proj with the rows of each head permuted;
  `hf_to_meta_qk` undoes that permutation, `meta_to_hf_qk` redoes it.
  (Permuting rows of wq/wk permutes q/k coordinates identically, so q.k is
  unchanged and the two conventions give the same attention.)
- Config spellings.  Older configs hold `rope_theta` + `rope_scaling`; configs
  written by transformers >= 5 hold `rope_parameters` with rope_theta inside.

Memory: tensors are read in the dtype they are stored in and converted one at
a time only if another dtype was asked for, so a bf16 checkpoint loaded as bf16
never has a float32 copy (1B parameters: 2.5 GB instead of 7.5 GB at peak).
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from ..core.config import LlamaConfig, RopeScaling
from ..errors import MinillamaError
from ..files import atomic_write
from .common import FIX, cast, check_weights, make_config, number, read_json, tie_output, write_json

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
LLAMA3_VOCAB_SIZE = 128256
LLAMA3_BOS_EOS = (128000, 128001)  # <|begin_of_text|>, <|end_of_text|>
LLAMA2_BOS_EOS = (1, 2)            # sentencepiece's <s>, </s>: Llama 2, llama2.c (tok512 too)

# HF name (per layer, after "model.layers.{i}.") -> minillama name (after "layers.{i}.")
HF_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
HF_GLOBAL_NAMES = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
                   "lm_head.weight": "output.weight"}
HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


# -- RoPE row permutation ---------------------------------------------------------------------
def hf_to_meta_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF q_proj/k_proj [n_heads*hd, dim] -> adjacent-pair (Meta) row order.

    Within each head HF stores rows [x_0, x_2, x_4, ..., x_1, x_3, ...] (halves);
    Meta stores [x_0, x_1, x_2, ...].  View as [heads, 2, hd/2, dim] and swap."""
    rows, dim = w.shape
    hd = rows // n_heads
    return w.view(n_heads, 2, hd // 2, dim).transpose(1, 2).reshape(rows, dim)


def meta_to_hf_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of hf_to_meta_qk (what HF's convert_llama_weights_to_hf.py does)."""
    rows, dim = w.shape
    hd = rows // n_heads
    return w.view(n_heads, hd // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


# -- reading ----------------------------------------------------------------------------------
def _hf_rope(cfg: dict, where: str) -> Tuple[float, Optional[RopeScaling]]:
    """(rope_theta, scaling) from either spelling: rope_theta + rope_scaling, or rope_parameters."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    theta = number(params, "rope_theta", float, where, number(cfg, "rope_theta", float, where, 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise MinillamaError(f"{where}: RoPE scaling {kind!r} is not supported (minillama reads Llama's 'llama3' "
                             "scaling or none)")
    where = f"{where} RoPE scaling"
    return theta, RopeScaling(factor=number(scaling, "factor", float, where),
                              low_freq_factor=number(scaling, "low_freq_factor", float, where),
                              high_freq_factor=number(scaling, "high_freq_factor", float, where),
                              original_max_position_embeddings=number(
                                  scaling, "original_max_position_embeddings", int, where))


def hf_config(cfg: dict, path: str) -> LlamaConfig:
    """LlamaConfig from a Hugging Face config.json dict."""
    model_type = cfg.get("model_type", "llama")
    if model_type != "llama":
        raise MinillamaError(f"{path}: model_type {model_type!r} is not a Llama model (minillama loads 'llama')")
    if cfg.get("attention_bias") or cfg.get("mlp_bias") or cfg.get("hidden_act", "silu") != "silu":
        raise MinillamaError(f"{path}: biases or a non-SiLU activation are not part of the Llama architecture minillama implements")
    where = os.path.join(path, HF_CONFIG)
    dim, n_heads = number(cfg, "hidden_size", int, where), number(cfg, "num_attention_heads", int, where)
    head_dim = number(cfg, "head_dim", int, where, None)
    if head_dim is not None and head_dim * n_heads != dim:
        raise MinillamaError(f"{path}: head_dim {head_dim} x {n_heads} heads != hidden_size {dim}; "
                             "minillama needs head_dim = hidden_size / num_attention_heads")
    theta, scaling = _hf_rope(cfg, where)
    return make_config(where, dim=dim, n_layers=number(cfg, "num_hidden_layers", int, where), n_heads=n_heads,
                       n_kv_heads=number(cfg, "num_key_value_heads", int, where, n_heads),
                       vocab_size=number(cfg, "vocab_size", int, where),
                       hidden_dim=number(cfg, "intermediate_size", int, where),
                       norm_eps=number(cfg, "rms_norm_eps", float, where, 1e-6), norm="rmsnorm",
                       max_seq_len=number(cfg, "max_position_embeddings", int, where, 2048), rope_theta=theta,
                       rope_scaling=scaling, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def hf_weight_files(path: str) -> List[str]:
    """The safetensors files of a HF directory: model.safetensors or every shard of the index."""
    single, index = os.path.join(path, HF_WEIGHTS), os.path.join(path, HF_INDEX)
    if os.path.isfile(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise MinillamaError(f"{index}: no weight_map; {FIX}")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not os.path.isfile(os.path.join(path, name)):
                raise MinillamaError(f"{path}: shard {name} listed in {HF_INDEX} is missing; "
                                     "finish the download (all shards are needed)")
        return [os.path.join(path, name) for name in files]
    if os.path.isfile(single):
        return [single]
    hint = " (found PyTorch .bin weights: re-save them with safetensors)" if glob.glob(os.path.join(path, "*.bin")) else ""
    raise MinillamaError(f"{path}: no {HF_WEIGHTS} or {HF_INDEX} beside config.json{hint}; "
                         "download the model's weights into this directory")


def iter_safetensors(files: List[str]) -> Iterator[Tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor, in its stored dtype (no conversion here)."""
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise MinillamaError(f"{file}: unreadable safetensors file ({str(e).splitlines()[0]}); "
                                 "re-download it") from None


def hf_state_dict(tensors: Iterator[Tuple[str, torch.Tensor]], config: LlamaConfig,
                  dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    """Rename HF tensors to minillama names, un-permute q/k, cast if asked."""
    state = {}
    for name, t in tensors:
        m = HF_LAYER_RE.match(name)
        if m and m.group(2) in HF_LAYER_NAMES:
            new = f"layers.{m.group(1)}.{HF_LAYER_NAMES[m.group(2)]}"
        elif name in HF_GLOBAL_NAMES:
            new = HF_GLOBAL_NAMES[name]
        else:
            continue  # e.g. rotary_emb.inv_freq of old exports: recomputed, not loaded
        t = cast(t, dtype)
        if new.endswith("attention.wq.weight"):
            t = hf_to_meta_qk(t, config.n_heads)
        elif new.endswith("attention.wk.weight"):
            t = hf_to_meta_qk(t, config.n_kv_heads)
        state[new] = t
    return state


def read_hf_dir(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state dict in minillama names); dtype None keeps the stored one (bf16 for Llama 3.2)."""
    config = hf_config(read_json(os.path.join(path, HF_CONFIG)), path)
    state = hf_state_dict(iter_safetensors(hf_weight_files(path)), config, dtype)
    check_weights(state, path)
    tie_output(config, state, config.tie_embeddings, path)
    return config, state


# -- writing ----------------------------------------------------------------------------------
def hf_tensors(model) -> Dict[str, torch.Tensor]:
    """model's weights under HF names, q/k rows in HF's rotate-half order;
    lm_head.weight only when untied (a tied HF model stores the embedding once)."""
    c = model.config
    sd = model.state_dict()
    tensors = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"]}
    if not c.tie_embeddings:
        tensors["lm_head.weight"] = sd["output.weight"]
    for i in range(c.n_layers):
        for theirs, ours in HF_LAYER_NAMES.items():
            t = sd[f"layers.{i}.{ours}"]
            if ours == "attention.wq.weight":
                t = meta_to_hf_qk(t, c.n_heads)
            elif ours == "attention.wk.weight":
                t = meta_to_hf_qk(t, c.n_kv_heads)
            tensors[f"model.layers.{i}.{theirs}"] = t
    return tensors


def _rope_dict(c: LlamaConfig) -> Optional[dict]:
    if c.rope_scaling is None:
        return None
    s = c.rope_scaling
    return {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings}


def save_hf_dir(model, path: str, bos_id: Optional[int] = None, eos_id: Optional[int] = None):
    """Write config.json + model.safetensors, which transformers' from_pretrained reads.

    bos_id / eos_id go into config.json; by default the model's family's own:
    Llama 3's (128000, 128001) for its 128256-token vocabulary, else Llama 2's
    and llama2.c's sentencepiece ids (1, 2)."""
    from safetensors.torch import save_file

    c = model.config
    default_bos, default_eos = LLAMA3_BOS_EOS if c.vocab_size == LLAMA3_VOCAB_SIZE else LLAMA2_BOS_EOS
    dtype = model.tok_embeddings.weight.dtype
    tensors = {k: v.detach().cpu().contiguous() for k, v in hf_tensors(model).items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
              "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
              "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
              "vocab_size": c.vocab_size, "rms_norm_eps": c.norm_eps, "max_position_embeddings": c.max_seq_len,
              "rope_theta": c.rope_theta, "rope_scaling": _rope_dict(c), "tie_word_embeddings": c.tie_embeddings,
              "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
              "torch_dtype": str(dtype).replace("torch.", ""),
              "bos_token_id": default_bos if bos_id is None else bos_id,
              "eos_token_id": default_eos if eos_id is None else eos_id}
    os.makedirs(path, exist_ok=True)
    atomic_write(os.path.join(path, HF_WEIGHTS), lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    write_json(os.path.join(path, HF_CONFIG), config)
