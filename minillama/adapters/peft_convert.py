"""What every method's PEFT converter shares: the `PeftConverter` interface, PEFT's file and
tensor names, and the checks of what a PEFT directory holds, each a one-line MinillamaError.

A method that PEFT has a format for declares its converter in its registry line
(adapters/registry.py: `Method(Config, Backbone, peft=ItsPeft())`), written beside the method
as adapters/<method>_peft.py; adapters/peft_format.py writes and reads the directory itself
(adapter_config.json + adapter_model.safetensors, base identity) and dispatches to it.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ..errors import MinillamaError

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's names: PeftModel.base_model (the tuner) .model (LlamaForCausalLM)


class PeftConverter:
    """One method's PEFT format, both ways: minillama's config and tensors <-> PEFT's."""

    peft_type = ""  # PEFT's name of the method: adapter_config.json's "peft_type"

    def check_exportable(self, config: dict):
        """Refuse, in one line, a config (AdapterConfig.to_dict()) PEFT has no format for;
        decided from the flags alone, before anything trains or loads.  Default: every config."""

    def to_peft(self, adapter) -> Tuple[dict, Dict[str, torch.Tensor]]:
        """(this method's fields of adapter_config.json, {PEFT tensor name: tensor})."""
        raise NotImplementedError

    def from_peft(self, cfg: dict, tensors: Dict[str, torch.Tensor], base, where: str) -> tuple:
        """(minillama's AdapterConfig, what `fit` makes the adapter's tensors of) for the PEFT
        config `cfg` and its tensors, checked against `base` (where: the directory, for messages)."""
        raise NotImplementedError

    def fit(self, model, found, where: str) -> Dict[str, torch.Tensor]:
        """After attach: {minillama name: tensor} to load into `model` (default: from_peft's as they are)."""
        return found


def field(cfg: dict, name: str, where: str, kind=int):
    """cfg[name] as `kind` (None: as it is), or one line: the field is missing or not a number."""
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


def check_decoder_only(cfg: dict, where: str, what: str):
    """Virtual tokens for one transformer (a Llama's), not an encoder-decoder's two."""
    if cfg.get("num_transformer_submodules", 1) != 1:
        raise MinillamaError(f"{where}/{CONFIG_FILE}: num_transformer_submodules "
                             f"{cfg['num_transformer_submodules']} is an encoder-decoder {what}, not a Llama's")
