"""What every decoder shares (sampling.py's loop and beam.py's search): the stop ids, how
many new tokens fit, and cutting a generation at its stop id."""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch

from ..errors import MinillamaError


def as_id_set(eos_id: Union[None, int, Iterable[int]], device=None) -> Optional[torch.Tensor]:
    """eos_id (None, an id or ids) -> None or the ids [n] on `device`; the first is what finished rows emit."""
    if eos_id is None:
        return None
    return torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=device)


def fit_new_tokens(model, prompt_len: int, max_new_tokens: int) -> int:
    """max_new_tokens, cut so prompt + new tokens fit the positions the model has for input."""
    if max_new_tokens < 0:
        raise MinillamaError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    room = model.input_room - prompt_len
    if room < 0 or prompt_len == 0:
        raise MinillamaError(f"prompt of {prompt_len} tokens does not fit the model's context of "
                             f"{model.input_room} tokens")
    return min(max_new_tokens, room)


def strip_after_stop(ids, stop_ids):
    """Cut the sequence at the first stop id (generate keeps emitting it once finished)."""
    stops = set(int(i) for i in stop_ids)
    for n, i in enumerate(ids):
        if i in stops:
            return ids[:n]
    return ids
