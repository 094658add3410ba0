"""Training checkpoints that a killed run resumes from exactly.

`<checkpoint_dir>/checkpoint.pt` holds everything the loop needs to go on as if it
had never stopped: the trainable weights, the optimizer's moments, the loop's
counters (epoch, step within it, the schedule's step, the best dev score, its weights
and the early-stopping count, the history), and every random state (the data order at
the start of the epoch, torch's CPU and CUDA generators for dropout, Python's and
NumPy's).  It is written through a temporary file and a rename (files.atomic_write),
so the previous checkpoint stays until the new one is whole, and read with
weights_only=True.  A `fingerprint` (the settings that shape the run) is stored with
it; resuming under other settings is refused, naming the first one that differs.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .errors import MinillamaError
from .files import atomic_write, check_writable

CHECKPOINT = "checkpoint.pt"


@dataclass
class LoopState:
    """Where the training loop is: enough to continue it exactly."""

    epoch: int = 0                 # the epoch in progress (or the next one)
    step_in_epoch: int = 0         # optimisation steps of that epoch already done
    step_index: int = 0            # optimisation steps done in all (the lr schedule's position)
    best: float = float("-inf")    # the best dev score so far (higher is better)
    best_state: Optional[Dict[str, torch.Tensor]] = None
    since_best: int = 0
    stopped: bool = False          # early stopping ended the run
    epoch_loss: float = 0.0        # sums over the epoch's steps so far
    epoch_correct: int = 0
    epoch_seen: int = 0
    step_losses: List[float] = field(default_factory=list)  # this epoch's losses, one per step
    history: List[Dict[str, Any]] = field(default_factory=list)  # EpochResult dicts of finished epochs
    data_rng: Optional[torch.Tensor] = None  # the batch-order generator at the start of `epoch`


def checkpoint_path(directory: str) -> str:
    return os.path.join(directory, CHECKPOINT)


def prepare_directory(directory: str):
    """Create the checkpoint directory and check that a checkpoint can be written there, so
    a bad --checkpoint_dir fails before training, not at the end of its first epoch."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise MinillamaError(f"--checkpoint_dir {directory} is a file, not a directory: choose another path")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise MinillamaError(f"--checkpoint_dir: cannot create {directory} ({e.strerror}); "
                             "choose another path") from None
    check_writable(checkpoint_path(directory), "--checkpoint_dir")


def _random_states() -> Dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [py_version, list(py_state), py_gauss],
            "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss]}


def _set_random_states(states: Dict[str, Any]):
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, py_state, gauss = states["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, np_gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))


def save(directory: str, state: LoopState, trainable: Dict[str, torch.Tensor], optimizer,
         fingerprint: Dict[str, Any]):
    """Write the checkpoint atomically (the old one stays until the new one is whole)."""
    os.makedirs(directory, exist_ok=True)
    payload = {"fingerprint": fingerprint, "loop": asdict(state),
               "weights": {n: p.detach().cpu().clone() for n, p in trainable.items()},
               "optimizer": optimizer.state_dict(), "random": _random_states()}
    atomic_write(checkpoint_path(directory), lambda tmp: torch.save(payload, tmp))


def first_difference(saved: Dict[str, Any], current: Dict[str, Any], prefix: str = "") -> Optional[str]:
    """'name was X, now Y' for the first setting that differs (None: none does): option and
    model first, plain settings before nested ones, a nested one named down to its key ('method.length')
    when both sides have the same keys (another kind of method is shown whole)."""
    # what the run is (its option, its model) before what follows from it (e.g. the head)
    keys = sorted(set(saved) | set(current), key=lambda k: (k not in ("option", "model"), str(k)))
    nested = [k for k in keys if isinstance(saved.get(k), dict) and isinstance(current.get(k), dict)]
    for key in [k for k in keys if k not in nested] + nested:
        was, now = saved.get(key), current.get(key)
        if was == now:
            continue
        if key in nested and set(was) == set(now):
            return first_difference(was, now, f"{prefix}{key}.")
        return f"{prefix}{key} was {was!r}, now {now!r}"
    return None


def load(directory: str, fingerprint: Dict[str, Any], trainable: Dict[str, torch.Tensor], optimizer) -> LoopState:
    """Restore weights, optimizer and random states from the checkpoint; return the loop state."""
    path = checkpoint_path(directory)
    if not os.path.isfile(path):
        raise MinillamaError(f"--resume: no checkpoint in {directory} (expected {path}); run once with "
                             "--checkpoint_dir to write one, or drop --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved_fp, loop, weights = payload["fingerprint"], payload["loop"], payload["weights"]
    except Exception as e:  # a truncated zip, a foreign file: the file's fault, said in one line
        raise MinillamaError(f"{path}: unreadable training checkpoint, truncated or corrupt "
                             f"({type(e).__name__}); delete it to start over, or resume from a whole copy") from None
    difference = first_difference(saved_fp, fingerprint)
    if difference:
        raise MinillamaError(f"{path} belongs to another run ({difference}): resume with the same model, option "
                             "and settings, or choose another --checkpoint_dir")
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    optimizer.load_state_dict(payload["optimizer"])
    _set_random_states(payload["random"])
    return LoopState(**loop)
