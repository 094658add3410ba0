"""Llama 3.2 checkpoint directories: reading (and writing) both published layouts.

Hugging Face layout                      Meta layout (also in HF repos under original/)
  config.json                              params.json
  model.safetensors, or shards listed      consolidated.00.pth (torch.save, read with
  in model.safetensors.index.json          weights_only=True and mmap)

Both become `(LlamaConfig, state_dict)` in minillama's names, which are Meta's
(= llama2.c's) names, so the Meta layout needs no renaming at all.

Two facts make the Hugging Face layout differ beyond names:
- RoPE convention.  minillama (like Meta and llama2.c) rotates *adjacent* pairs
  (0,1), (2,3)...  HF rotates the two *halves* of a head (i, i + hd/2).  HF's
  conversion script therefore stored q_proj/k_proj with the rows of each head
  permuted; `hf_to_meta_qk` undoes that permutation, `meta_to_hf_qk` redoes it.
  (Permuting rows of wq/wk permutes q/k coordinates identically, so q.k is
  unchanged and the two conventions give the same attention.)
- Config spellings.  Older configs hold `rope_theta` + `rope_scaling`; configs
  written by transformers >= 5 hold `rope_parameters` with rope_theta inside.

Every directory loads with family "llama3": Llama 2 and Llama 3 checkpoints are
all RMSNorm models, and `loading.choose_norm` forces RMSNorm for that family
(a LayerNorm forced onto pretrained Llama weights would ruin them).

Memory: tensors are read in the dtype they are stored in and converted one at
a time only if another dtype was asked for, so a bf16 checkpoint loaded as bf16
never has a float32 copy (1B parameters: 2.5 GB instead of 7.5 GB at peak).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .config import LlamaConfig, RopeScaling
from .errors import MinillamaError
from .files import atomic_write

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
META_PARAMS = "params.json"
META_WEIGHTS = "consolidated.00.pth"
LLAMA3_VOCAB_SIZE = 128256
# Meta's params.json does not store the context length: Llama 3.1/3.2 (scaled RoPE)
# read 128K tokens, Llama 3 without scaling 8K.
META_SCALED_MAX_SEQ_LEN = 131072
META_UNSCALED_MAX_SEQ_LEN = 8192

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


# -- RoPE row permutation ---------------------------------------------------------------
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


# -- shared helpers ----------------------------------------------------------------------
def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinillamaError(f"{path}: unreadable JSON ({str(e).splitlines()[0]}); re-download the checkpoint") from None
    if not isinstance(data, dict):
        raise MinillamaError(f"{path}: expected a JSON object")
    return data


def _cast(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Convert only when another dtype is asked for: same dtype -> the same tensor, no copy."""
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _tie_output(config: LlamaConfig, state: Dict[str, torch.Tensor], tied: bool, where: str):
    """Tied models share one tensor for embedding and output (the load keeps them tied)."""
    if tied or "output.weight" not in state:
        if not tied:
            raise MinillamaError(f"{where}: output weight (lm_head.weight / output.weight) is missing and the "
                                 "embeddings are not tied: the checkpoint is incomplete, re-download it")
        state["output.weight"] = state["tok_embeddings.weight"]
    config.tie_embeddings = tied


def _check_weights(state: Dict[str, torch.Tensor], where: str):
    if "tok_embeddings.weight" not in state:
        raise MinillamaError(f"{where}: no token embedding in the weights (not a Llama checkpoint?)")
    for name, t in state.items():
        if not t.is_floating_point():
            raise MinillamaError(f"{where}: weight {name} has non-float dtype {t.dtype}")


# -- Hugging Face layout -----------------------------------------------------------------
def _hf_rope(cfg: dict, path: str) -> Tuple[float, Optional[RopeScaling]]:
    """(rope_theta, scaling) from either spelling: rope_theta + rope_scaling, or rope_parameters."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise MinillamaError(f"{path}: RoPE scaling {kind!r} is not supported (minillama reads Llama's 'llama3' "
                             "scaling or none)")
    try:
        return theta, RopeScaling(factor=float(scaling["factor"]), low_freq_factor=float(scaling["low_freq_factor"]),
                                  high_freq_factor=float(scaling["high_freq_factor"]),
                                  original_max_position_embeddings=int(scaling["original_max_position_embeddings"]))
    except KeyError as e:
        raise MinillamaError(f"{path}: llama3 RoPE scaling lacks {e.args[0]!r}") from None


def hf_config(cfg: dict, path: str) -> LlamaConfig:
    """LlamaConfig from a Hugging Face config.json dict."""
    model_type = cfg.get("model_type", "llama")
    if model_type != "llama":
        raise MinillamaError(f"{path}: model_type {model_type!r} is not a Llama model (minillama loads 'llama')")
    if cfg.get("attention_bias") or cfg.get("mlp_bias") or cfg.get("hidden_act", "silu") != "silu":
        raise MinillamaError(f"{path}: biases or a non-SiLU activation are not part of the Llama architecture minillama implements")
    try:
        dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        n_layers, vocab, hidden = int(cfg["num_hidden_layers"]), int(cfg["vocab_size"]), int(cfg["intermediate_size"])
    except KeyError as e:
        raise MinillamaError(f"{path}: config.json lacks {e.args[0]!r}") from None
    head_dim = cfg.get("head_dim")
    if head_dim is not None and int(head_dim) * n_heads != dim:
        raise MinillamaError(f"{path}: head_dim {head_dim} x {n_heads} heads != hidden_size {dim}; "
                             "minillama needs head_dim = hidden_size / num_attention_heads")
    theta, scaling = _hf_rope(cfg, path)
    return LlamaConfig(dim=dim, n_layers=n_layers, n_heads=n_heads,
                       n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads), vocab_size=vocab,
                       hidden_dim=hidden, norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), norm="rmsnorm",
                       max_seq_len=int(cfg.get("max_position_embeddings", 2048)), rope_theta=theta,
                       rope_scaling=scaling, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))


def hf_weight_files(path: str) -> List[str]:
    """The safetensors files of a HF directory: model.safetensors or every shard of the index."""
    single, index = os.path.join(path, HF_WEIGHTS), os.path.join(path, HF_INDEX)
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise MinillamaError(f"{index}: no weight_map; re-download the checkpoint")
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
        t = _cast(t, dtype)
        if new.endswith("attention.wq.weight"):
            t = hf_to_meta_qk(t, config.n_heads)
        elif new.endswith("attention.wk.weight"):
            t = hf_to_meta_qk(t, config.n_kv_heads)
        state[new] = t
    return state


def read_hf_dir(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    config = hf_config(_read_json(os.path.join(path, HF_CONFIG)), path)
    state = hf_state_dict(iter_safetensors(hf_weight_files(path)), config, dtype)
    _check_weights(state, path)
    _tie_output(config, state, config.tie_embeddings, path)
    return config, state


# -- Meta layout -------------------------------------------------------------------------
def meta_dir(path: str) -> str:
    """The folder holding params.json: the directory itself or its original/ subfolder."""
    for candidate in (path, os.path.join(path, "original")):
        if os.path.isfile(os.path.join(candidate, META_PARAMS)):
            return candidate
    raise MinillamaError(f"{path}: no {META_PARAMS} (Meta layout) or {HF_CONFIG} (Hugging Face layout)")


def meta_config(params: dict, path: str) -> LlamaConfig:
    """LlamaConfig from Meta's params.json."""
    try:
        dim, n_layers, n_heads = int(params["dim"]), int(params["n_layers"]), int(params["n_heads"])
        vocab = int(params["vocab_size"])
    except KeyError as e:
        raise MinillamaError(f"{path}: params.json lacks {e.args[0]!r}") from None
    scaled = bool(params.get("use_scaled_rope", False))
    scaling = None
    if scaled:  # Meta's apply_scaling constants; Llama 3.2's factor is 32 (its HF config says so too).
        # rope_low_freq_factor / rope_original_max_position_embeddings are minillama's
        # extension (written only for non-standard models); Meta's readers ignore unknown keys.
        d = RopeScaling()
        scaling = RopeScaling(factor=float(params.get("rope_scaling_factor") or d.factor),
                              low_freq_factor=float(params.get("rope_low_freq_factor") or d.low_freq_factor),
                              high_freq_factor=float(params.get("rope_high_freq_factor") or d.high_freq_factor),
                              original_max_position_embeddings=int(params.get("rope_original_max_position_embeddings")
                                                                   or d.original_max_position_embeddings))
    return LlamaConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=params.get("n_kv_heads") or n_heads,
                       vocab_size=vocab, multiple_of=int(params.get("multiple_of", 256)),
                       ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
                       norm_eps=float(params.get("norm_eps", 1e-5)), norm="rmsnorm",
                       max_seq_len=META_SCALED_MAX_SEQ_LEN if scaled else META_UNSCALED_MAX_SEQ_LEN,
                       rope_theta=float(params.get("rope_theta", 10000.0)), rope_scaling=scaling)


def read_meta_dir(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    folder = meta_dir(path)
    config = meta_config(_read_json(os.path.join(folder, META_PARAMS)), folder)
    shards = sorted(glob.glob(os.path.join(folder, "consolidated.*.pth")))
    if not shards:
        raise MinillamaError(f"{folder}: no {META_WEIGHTS} beside {META_PARAMS}; download the model's weights")
    if len(shards) > 1:
        raise MinillamaError(f"{folder}: {len(shards)} model-parallel shards; minillama reads single-file "
                             "checkpoints (1B/3B) — use the Hugging Face layout of this model instead")
    try:
        raw = torch.load(shards[0], map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # unpickling errors come in many types; all mean a bad file
        raise MinillamaError(f"{shards[0]}: refused or unreadable ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); re-download it") from None
    if not isinstance(raw, dict):
        raise MinillamaError(f"{shards[0]}: expected a state dict of tensors")
    # mmap: tensors stay on disk until used; casting reads them once, same dtype keeps the mapping
    state = {k: _cast(v, dtype) for k, v in raw.items() if isinstance(v, torch.Tensor) and k != "rope.freqs"}
    _check_weights(state, shards[0])
    emb, out = state["tok_embeddings.weight"], state.get("output.weight")
    # tied if absent, stored once, or stored twice with equal values (then share one tensor: half the memory)
    tied = out is None or out.data_ptr() == emb.data_ptr() or (out.shape == emb.shape and torch.equal(out, emb))
    _tie_output(config, state, tied, shards[0])
    return config, state


def read_llama3_dir(path: str, fmt: str, dtype: Optional[torch.dtype] = None
                    ) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state dict in minillama names) of a HF ('hf_dir') or Meta ('meta_dir') directory.

    dtype None keeps the stored dtype (bf16 for the published Llama 3.2)."""
    return read_hf_dir(path, dtype) if fmt == "hf_dir" else read_meta_dir(path, dtype)


# -- writers -----------------------------------------------------------------------------
def _write_json(path: str, data: dict):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    atomic_write(path, write)


def _rope_dict(c: LlamaConfig) -> Optional[dict]:
    if c.rope_scaling is None:
        return None
    s = c.rope_scaling
    return {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings}


def save_hf_dir(model, path: str):
    """Write config.json + model.safetensors (HF names, q/k rows in HF's rotate-half order)."""
    from safetensors.torch import save_file

    c = model.config
    os.makedirs(path, exist_ok=True)
    sd = model.state_dict()
    dtype = sd["tok_embeddings.weight"].dtype
    tensors = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"]}
    if not c.tie_embeddings:
        tensors["lm_head.weight"] = sd["output.weight"]
    inverse = {v: k for k, v in HF_LAYER_NAMES.items()}
    for i in range(c.n_layers):
        for ours, theirs in inverse.items():
            t = sd[f"layers.{i}.{ours}"]
            if ours == "attention.wq.weight":
                t = meta_to_hf_qk(t, c.n_heads)
            elif ours == "attention.wk.weight":
                t = meta_to_hf_qk(t, c.n_kv_heads)
            tensors[f"model.layers.{i}.{theirs}"] = t
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
              "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
              "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
              "vocab_size": c.vocab_size, "rms_norm_eps": c.norm_eps, "max_position_embeddings": c.max_seq_len,
              "rope_theta": c.rope_theta, "rope_scaling": _rope_dict(c), "tie_word_embeddings": c.tie_embeddings,
              "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
              "torch_dtype": str(dtype).replace("torch.", ""),
              "bos_token_id": 128000, "eos_token_id": 128001}
    atomic_write(os.path.join(path, HF_WEIGHTS), lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _write_json(os.path.join(path, HF_CONFIG), config)


def save_meta_dir(model, path: str):
    """Write params.json + consolidated.00.pth (Meta names = minillama names)."""
    c = model.config
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if c.tie_embeddings:
        state.pop("output.weight")  # a tied model's reader re-ties from the embedding
    params = {"dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
              "vocab_size": c.vocab_size, **_meta_ffn(c), "norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
              "use_scaled_rope": c.rope_scaling is not None}
    if c.rope_scaling is not None:
        s, d = c.rope_scaling, RopeScaling()
        params.update(rope_scaling_factor=s.factor, rope_high_freq_factor=s.high_freq_factor)
        if s.low_freq_factor != d.low_freq_factor:
            params["rope_low_freq_factor"] = s.low_freq_factor
        if s.original_max_position_embeddings != d.original_max_position_embeddings:
            params["rope_original_max_position_embeddings"] = s.original_max_position_embeddings
    atomic_write(os.path.join(path, META_WEIGHTS), lambda tmp: torch.save(state, tmp))
    _write_json(os.path.join(path, META_PARAMS), params)


def _meta_ffn(c: LlamaConfig) -> dict:
    """multiple_of / ffn_dim_multiplier that reproduce c.hidden_dim under Meta's width rule.
    Any width can be expressed: with multiple_of = hidden, every value in (0, hidden] rounds to it."""
    from .config import ffn_hidden_dim

    if ffn_hidden_dim(c.dim, c.multiple_of, c.ffn_dim_multiplier) == c.hidden_dim:
        return {"multiple_of": c.multiple_of, "ffn_dim_multiplier": c.ffn_dim_multiplier}
    base = int(2 * (4 * c.dim) / 3)
    return {"multiple_of": c.hidden_dim, "ffn_dim_multiplier": None if base <= c.hidden_dim else c.hidden_dim / base}
