"""Meta's checkpoint directories (also inside HF repos, under original/), read and written.

  params.json           the architecture, in Meta's (= minillama's) field names
  consolidated.00.pth   a torch.save'd state dict in Meta's (= minillama's) tensor
                        names: nothing is renamed or permuted, Meta rotates
                        adjacent RoPE pairs as minillama does.

Read without running pickled code and memory-mapped (common.load_torch_file).
"""
from __future__ import annotations

import glob
import os
from typing import Dict, Optional, Tuple

import torch

from ..core.config import LlamaConfig, RopeScaling, ffn_hidden_dim
from ..errors import MinillamaError
from ..files import atomic_write
from .common import cast, check_weights, load_torch_file, looks_tied, make_config, number, read_json, \
    tie_output, write_json

META_PARAMS = "params.json"
META_WEIGHTS = "consolidated.00.pth"
# params.json does not store the context length: Llama 3.1/3.2 (scaled RoPE)
# read 128K tokens, Llama 3 without scaling 8K.
META_SCALED_MAX_SEQ_LEN = 131072
META_UNSCALED_MAX_SEQ_LEN = 8192


def params_folder(path: str) -> Optional[str]:
    """The folder holding params.json: the directory itself or its original/ subfolder (None: neither)."""
    for candidate in (path, os.path.join(path, "original")):
        if os.path.isfile(os.path.join(candidate, META_PARAMS)):
            return candidate
    return None


def meta_config(params: dict, path: str) -> LlamaConfig:
    """LlamaConfig from Meta's params.json."""
    where = os.path.join(path, META_PARAMS) if os.path.isdir(path) else path
    n_heads = number(params, "n_heads", int, where)
    scaled = bool(params.get("use_scaled_rope", False))
    scaling = None
    if scaled:  # Meta's apply_scaling constants; Llama 3.2's factor is 32 (its HF config says so too).
        # rope_low_freq_factor / rope_original_max_position_embeddings are minillama's
        # extension (written only for non-standard models); Meta's readers ignore unknown keys.
        d = RopeScaling()
        scaling = RopeScaling(factor=number(params, "rope_scaling_factor", float, where, d.factor),
                              low_freq_factor=number(params, "rope_low_freq_factor", float, where, d.low_freq_factor),
                              high_freq_factor=number(params, "rope_high_freq_factor", float, where,
                                                      d.high_freq_factor),
                              original_max_position_embeddings=number(
                                  params, "rope_original_max_position_embeddings", int, where,
                                  d.original_max_position_embeddings))
    return make_config(where, dim=number(params, "dim", int, where), n_layers=number(params, "n_layers", int, where),
                       n_heads=n_heads, n_kv_heads=number(params, "n_kv_heads", int, where, n_heads),
                       vocab_size=number(params, "vocab_size", int, where),
                       multiple_of=number(params, "multiple_of", int, where, 256),
                       ffn_dim_multiplier=number(params, "ffn_dim_multiplier", float, where, None),
                       norm_eps=number(params, "norm_eps", float, where, 1e-5), norm="rmsnorm",
                       max_seq_len=META_SCALED_MAX_SEQ_LEN if scaled else META_UNSCALED_MAX_SEQ_LEN,
                       rope_theta=number(params, "rope_theta", float, where, 10000.0), rope_scaling=scaling)


def read_meta_dir(path: str, dtype: Optional[torch.dtype] = None) -> Tuple[LlamaConfig, Dict[str, torch.Tensor]]:
    """(config, state dict); dtype None keeps the stored one (bf16 for Llama 3.2)."""
    folder = params_folder(path)
    if folder is None:
        raise MinillamaError(f"{path}: no {META_PARAMS} here or in original/ (not a Meta-layout directory)")
    config = meta_config(read_json(os.path.join(folder, META_PARAMS)), folder)
    shards = sorted(glob.glob(os.path.join(folder, "consolidated.*.pth")))
    if not shards:
        raise MinillamaError(f"{folder}: no {META_WEIGHTS} beside {META_PARAMS}; download the model's weights")
    if len(shards) > 1:
        raise MinillamaError(f"{folder}: {len(shards)} model-parallel shards; minillama reads single-file "
                             "checkpoints (1B/3B) — use the Hugging Face layout of this model instead")
    raw = load_torch_file(shards[0])
    if not isinstance(raw, dict):
        raise MinillamaError(f"{shards[0]}: expected a state dict of tensors")
    # mmap: tensors stay on disk until used; casting reads them once, same dtype keeps the mapping
    state = {k: cast(v, dtype) for k, v in raw.items() if isinstance(v, torch.Tensor) and k != "rope.freqs"}
    check_weights(state, shards[0])
    # stored once or twice with equal values: share one tensor (half the memory)
    tie_output(config, state, looks_tied(state), shards[0])
    return config, state


def _meta_ffn(c: LlamaConfig) -> dict:
    """multiple_of / ffn_dim_multiplier that reproduce c.hidden_dim under Meta's width rule.
    Any width can be expressed: with multiple_of = hidden, every value in (0, hidden] rounds to it."""
    if ffn_hidden_dim(c.dim, c.multiple_of, c.ffn_dim_multiplier) == c.hidden_dim:
        return {"multiple_of": c.multiple_of, "ffn_dim_multiplier": c.ffn_dim_multiplier}
    base = int(2 * (4 * c.dim) / 3)
    return {"multiple_of": c.hidden_dim, "ffn_dim_multiplier": None if base <= c.hidden_dim else c.hidden_dim / base}


def save_meta_dir(model, path: str):
    """Write params.json + consolidated.00.pth (Meta names = minillama names)."""
    c = model.config
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
    os.makedirs(path, exist_ok=True)
    atomic_write(os.path.join(path, META_WEIGHTS), lambda tmp: torch.save(state, tmp))
    write_json(os.path.join(path, META_PARAMS), params)
