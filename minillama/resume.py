"""Training checkpoints that a killed run resumes from exactly.

`<checkpoint_dir>/checkpoint.pt` holds everything the loop needs to go on as if it
had never stopped: the trainable weights, the optimizer's moments, the loop's
counters (epoch, step within it, the schedule's step, the best dev score, its weights
and the early-stopping count, the history), and every random state (the data order at
the start of the epoch, torch's CPU and CUDA generators for dropout, Python's and
NumPy's).

The file is a `torch.save` zip of {"format": 2, "fingerprint", "loop", "weights",
"optimizer", "random"} followed by one line, `minillama-checkpoint sha256 <hex>`, the
sha256 of every byte before it (torch reads the zip and ignores the line; torch checks
no CRC, so without it a flipped bit would train on).  Zip and line are written to a
temporary file renamed over the old checkpoint (files.atomic_write), so the previous
checkpoint stays until the new one is whole, and read with weights_only=True.

Loading refuses, in one line and before any of it is used:
- a damaged file (checksum differs or missing, unreadable zip) and a checkpoint of an
  earlier minillama (format 1: no checksum, data known by path);
- another run's checkpoint: the `fingerprint` holds the settings that shape the run,
  data files by content (`data_identity`: size and sha256, so an input edited in place
  is noticed and a moved copy is accepted) and model / tokenizer by resolved path;
  the first setting that differs is named;
- an inconsistent one (`check_payload`): weights missing or of another shape, no
  optimizer state, an unknown loop field, a random state that does not restore.

One run at a time per directory: `run_lock` holds `<checkpoint_dir>/run.lock` (an
flock, released at exit however the run ends, even when killed; the file names the
owner's pid) for as long as the loop runs; a second run is refused naming the owner.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from . import distributed
from .errors import MinillamaError
from .files import atomic_write, check_writable, resolve_repo_path

CHECKPOINT = "checkpoint.pt"
LOCK = "run.lock"
FORMAT = 2  # 1: no "format" key, no checksum line, data files known by their paths
TRAILER_START = b"\nminillama-checkpoint sha256 "
TRAILER_SIZE = len(TRAILER_START) + 64 + 1  # the hex digest and a newline
PAYLOAD_NAMES = {"format": "format number", "fingerprint": "fingerprint (the run's settings)", "loop": "loop state",
                 "weights": "weights", "optimizer": "optimizer state", "random": "random states"}
PAYLOAD_KEYS = tuple(PAYLOAD_NAMES)


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


def require_checkpoint(directory: str):
    """--resume needs a checkpoint to resume from: say so before anything else happens."""
    path = checkpoint_path(directory)
    if not os.path.isfile(path):
        raise MinillamaError(f"--resume: no checkpoint in {directory} (expected {path}); run once with "
                             "--checkpoint_dir to write one, or drop --resume")


# -- what identifies a run: settings, data by content, other paths resolved ---------------------
def resolved(path: Optional[str]) -> Optional[str]:
    """The one spelling of a path (symlinks and '..' resolved, found as the readers find it)."""
    return os.path.realpath(resolve_repo_path(path)) if path else path


def _file_sha256(path: str, size: Optional[int] = None) -> str:
    """sha256 of the first `size` bytes of a file (all of it by default), read in pieces."""
    digest, left = hashlib.sha256(), os.path.getsize(path) if size is None else size
    with open(path, "rb") as f:
        while left > 0:
            piece = f.read(min(left, 1 << 20))
            if not piece:
                break
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def data_identity(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """A data file (or a directory of them) by content: {"data": resolved path, "bytes": size,
    "sha256": digest}; a directory's digest covers each file's relative name and digest.
    Computed once per run.  None (no such input) stays None."""
    if not path:
        return None
    real = resolved(path)
    if not os.path.isdir(real):
        return {"data": real, "bytes": os.path.getsize(real), "sha256": _file_sha256(real)}
    digest, size = hashlib.sha256(), 0
    for root, dirs, files in os.walk(real):
        dirs.sort()
        for name in sorted(files):
            member = os.path.join(root, name)
            size += os.path.getsize(member)
            digest.update(f"{os.path.relpath(member, real)}\0{_file_sha256(member)}\n".encode())
    return {"data": real, "bytes": size, "sha256": digest.hexdigest()}


def _is_data(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"data", "bytes", "sha256"}


def _data_difference(key: str, was: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
    """None when the contents are the same (wherever the file now is), else what changed."""
    if (was["bytes"], was["sha256"]) == (now["bytes"], now["sha256"]):
        return None
    if was["data"] == now["data"]:
        sizes = f"{was['bytes']} bytes then, {now['bytes']} now" if was["bytes"] != now["bytes"] else \
            f"the same {now['bytes']} bytes, other contents"
        return f"{key}: {now['data']} changed since the checkpoint was written ({sizes})"
    return f"{key} was {was['data']} ({was['bytes']} bytes), now {now['data']} ({now['bytes']} bytes)"


def first_difference(saved: Dict[str, Any], current: Dict[str, Any], prefix: str = "") -> Optional[str]:
    """'name was X, now Y' for the first setting that differs (None: none does): option and
    model first, plain settings before nested ones, a nested one named down to its key ('method.length')
    when both sides have the same keys (another kind of method is shown whole).  Data files
    compare by content (`data_identity`)."""
    # what the run is (its option, its model) before what follows from it (e.g. the head)
    keys = sorted(set(saved) | set(current), key=lambda k: (k not in ("option", "model"), str(k)))
    nested = [k for k in keys if isinstance(saved.get(k), dict) and isinstance(current.get(k), dict)]
    for key in [k for k in keys if k not in nested] + nested:
        was, now = saved.get(key), current.get(key)
        if _is_data(was) and _is_data(now):
            difference = _data_difference(f"{prefix}{key}", was, now)
            if difference:
                return difference
            continue
        if was == now:
            continue
        if key in nested and set(was) == set(now):
            return first_difference(was, now, f"{prefix}{key}.")
        return f"{prefix}{key} was {was!r}, now {now!r}"
    return None


# -- one run per checkpoint directory ------------------------------------------------------------
def _agree(error: Optional[str], others: str):
    """Under torchrun only rank 0 locks and writes: every rank raises when it failed (so no rank
    waits for the others forever); `others` is the message of the ranks that did not see it."""
    if distributed.all_sum([1.0 if error else 0.0])[0]:
        raise MinillamaError(error or others)


def _owner(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "a process that has not written its pid yet"


def _take_lock(path: str) -> Tuple[Optional[int], Optional[str]]:
    """(the locked file's descriptor, None) or (None, why not).  A lock file left by a dead
    run holds no flock and is simply taken over."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = _owner(fd) if e.errno in (errno.EAGAIN, errno.EACCES) else None
            os.close(fd)
            if owner is None:  # a file system without locks: run unguarded rather than not at all
                print(f"note: cannot lock {path} ({e.strerror}); make sure no other run uses "
                      f"{os.path.dirname(path)}")
                return None, None
            return None, (f"--checkpoint_dir {os.path.dirname(path)} is in use by another run ({owner}, "
                          f"holding {path}): wait for it to end, or choose another --checkpoint_dir")
        try:  # the previous owner removes the file as it lets go: lock the file that is there now
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd, None
        os.close(fd)


@contextlib.contextmanager
def run_lock(directory: Optional[str]) -> Iterator[None]:
    """Hold `<directory>/run.lock` while the block runs (nothing when directory is None).
    The file is removed, still locked, on the way out, whatever ends the block."""
    if not directory:
        yield
        return
    fd, error = _take_lock(os.path.join(directory, LOCK)) if distributed.is_main() else (None, None)
    _agree(error, f"--checkpoint_dir {directory} is in use by another run")
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, LOCK))
            os.close(fd)


# -- writing ------------------------------------------------------------------------------------
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


def write_checkpoint(path: str, payload: Dict[str, Any]):
    """The zip, then its checksum line, into a temporary file renamed to `path`."""
    def write(tmp: str):
        torch.save(payload, tmp)
        digest = _file_sha256(tmp)
        with open(tmp, "ab") as f:
            f.write(TRAILER_START + digest.encode("ascii") + b"\n")
    atomic_write(path, write)


def _write_failure(e: BaseException, directory: str) -> Optional[str]:
    """Why writing failed, in words, for the errors a full or broken disk gives (None: another error)."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e)
    if isinstance(e, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
        free = shutil.disk_usage(directory).free
        return f"torch could not write it, {free / 2**20:.1f} MiB free there: is the disk full?"
    return None


def save(directory: str, state: LoopState, trainable: Dict[str, torch.Tensor], optimizer,
         fingerprint: Dict[str, Any], kept: Optional[Tuple[int, int]] = None):
    """Write the checkpoint atomically (the old one stays until the new one is whole).
    `kept` is the (epoch, step) of the checkpoint already there, named if this one cannot be written."""
    path = checkpoint_path(directory)
    payload = {"format": FORMAT, "fingerprint": fingerprint, "loop": asdict(state),
               "weights": {n: p.detach().cpu().clone() for n, p in trainable.items()},
               "optimizer": optimizer.state_dict(), "random": _random_states()}
    error = None
    try:
        write_checkpoint(path, payload)
    except (OSError, RuntimeError) as e:
        reason = _write_failure(e, directory)
        if reason is None:
            raise
        if kept is not None:
            what = f"the previous checkpoint (epoch {kept[0]}, step {kept[1]}) is kept"
        else:
            what = "the checkpoint already there is kept" if os.path.exists(path) else "no checkpoint was kept"
        error = (f"--checkpoint_dir: cannot write {path} ({reason}); {what} and no output was written: "
                 "free some space, then rerun with --resume")
    _agree(error, f"--checkpoint_dir: rank 0 cannot write {path}")


# -- reading: whole, then consistent with this run, then used -------------------------------------
def _damaged(path: str, why: str) -> MinillamaError:
    return MinillamaError(f"{path} is damaged ({why}): delete it to start over, or resume from an undamaged copy")


def _torch_load(path: str):
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The payload of a whole checkpoint (its checksum verified), or a one-line MinillamaError."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - TRAILER_SIZE))
        trailer = f.read()
    if len(trailer) == TRAILER_SIZE and trailer.startswith(TRAILER_START) and trailer.endswith(b"\n"):
        if _file_sha256(path, size - TRAILER_SIZE) != trailer[len(TRAILER_START):-1].decode("ascii", "replace"):
            raise _damaged(path, "its bytes do not match the sha256 written with it")
        try:
            return _torch_load(path)
        except Exception as e:  # whole but unreadable: not written by minillama
            raise _damaged(path, f"unreadable, {type(e).__name__}") from None
    try:  # no checksum line: cut short, another file, or an earlier minillama's checkpoint
        payload = _torch_load(path)
    except Exception as e:
        raise _damaged(path, f"no checksum line and unreadable: truncated or corrupt, {type(e).__name__}") from None
    if isinstance(payload, dict) and {"fingerprint", "loop"} <= set(payload) and "format" not in payload:
        raise MinillamaError(f"{path} was written by an earlier minillama (no checksum, data known by path "
                             "only), which this one cannot check: delete it to start over")
    raise _damaged(path, "no checksum line: truncated, or not a minillama training checkpoint")


def _tensor_problem(value: Any, shape: torch.Size) -> Optional[str]:
    if not isinstance(value, torch.Tensor):
        return f"is a {type(value).__name__}, not a tensor"
    if tuple(value.shape) != tuple(shape):
        return f"has shape {list(value.shape)}, this run's is {list(shape)}"
    if not value.is_floating_point():
        return f"is {value.dtype}, not a floating-point tensor"
    return None


def _weights_problem(weights: Any, trainable: Dict[str, torch.Tensor], what: str) -> Optional[str]:
    if not isinstance(weights, dict):
        return f"its {what} are not a table of tensors"
    for name, p in trainable.items():
        if name not in weights:
            return f"its {what} have no {name}"
        problem = _tensor_problem(weights[name], p.shape)
        if problem:
            return f"its {what}' {name} {problem}"
    extra = sorted(set(weights) - set(trainable))
    return f"its {what} hold {extra[0]}, which this run does not train" if extra else None


def _optimizer_problem(saved: Any, optimizer, step_index: int) -> Optional[str]:
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= set(saved):
        return "it has no optimizer state"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = saved["param_groups"]
    if not isinstance(groups, list) or [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in groups] != \
            [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimizer groups are not this run's (other parameters or learning rates)"
    state = saved["state"]
    if not isinstance(state, dict) or (step_index > 0 and not state):
        return f"its optimizer holds no moments after {step_index} step(s)"
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(entry, dict):
            return f"its optimizer state has an entry {index!r} for no parameter of this run"
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                problem = _tensor_problem(value, params[index].shape)
                if problem:
                    return f"its optimizer's {key} of parameter {index} {problem}"
    return None


def _restores(restore: Callable[[], None]) -> bool:
    try:
        restore()
        return True
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError):
        return False


def _generator_state_ok(state: Any) -> bool:
    return isinstance(state, torch.Tensor) and _restores(lambda: torch.Generator().set_state(state))


def _random_problem(states: Any) -> Optional[str]:
    if not isinstance(states, dict) or set(states) != {"torch", "cuda", "python", "numpy"}:
        return "its random states are not torch, cuda, python and numpy"
    if not _generator_state_ok(states["torch"]):
        return "its torch random state does not restore"
    if not isinstance(states["cuda"], list) or not all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8
                                                       for s in states["cuda"]):
        return "its CUDA random states do not restore"

    def python():
        version, py_state, gauss = states["python"]
        random.Random().setstate((version, tuple(py_state), gauss))

    def numpy():
        name, keys, pos, has_gauss, np_gauss = states["numpy"]
        np.random.RandomState().set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))
    for name, restore in (("python", python), ("numpy", numpy)):
        if not _restores(restore):
            return f"its {name} random state does not restore"
    return None


LOOP_TYPES = {"epoch": int, "step_in_epoch": int, "step_index": int, "since_best": int, "epoch_correct": int,
              "epoch_seen": int, "best": (int, float), "epoch_loss": (int, float), "stopped": bool,
              "step_losses": list, "history": list}


def _loop_problem(loop: Any, trainable: Dict[str, torch.Tensor], steps_per_epoch: int, epochs: int,
                  record_fields: Collection[str]) -> Optional[str]:
    names = [f.name for f in fields(LoopState)]
    if not isinstance(loop, dict):
        return "its loop state is not a table"
    unknown, missing = sorted(set(loop) - set(names), key=str), [n for n in names if n not in loop]
    if unknown or missing:
        return f"its loop state has an unknown field {unknown[0]!r}" if unknown else \
            f"its loop state has no {missing[0]}"
    for name, kind in LOOP_TYPES.items():
        value = loop[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"its loop.{name} is {value!r}"
    if any(not isinstance(r, dict) or not set(r) <= set(record_fields) for r in loop["history"]):
        return "its loop.history holds a record of unknown fields"
    if not 0 <= loop["epoch"] <= epochs or not 0 <= loop["step_in_epoch"] < max(steps_per_epoch, 1) \
            or loop["step_index"] != loop["epoch"] * steps_per_epoch + loop["step_in_epoch"]:
        return (f"its loop position (epoch {loop['epoch']}, step {loop['step_in_epoch']}, {loop['step_index']} "
                f"in all) is not one of this run's {epochs} epochs of {steps_per_epoch} steps")
    if loop["best_state"] is not None:
        problem = _weights_problem(loop["best_state"], trainable, "best weights")
        if problem:
            return problem
    if not _generator_state_ok(loop["data_rng"]):
        return "its loop.data_rng (the batch order) does not restore"
    return None


def check_payload(payload: Dict[str, Any], fingerprint: Dict[str, Any], trainable: Dict[str, torch.Tensor],
                  optimizer, steps_per_epoch: int, epochs: int, record_fields: Collection[str]) -> Optional[str]:
    """What, if anything, makes this (whole) checkpoint unusable by this run: checked entirely
    before any of it is used.  'belongs to another run (...)' when the settings differ."""
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not a table"
    missing, unknown = [k for k in PAYLOAD_KEYS if k not in payload], sorted(set(payload) - set(PAYLOAD_KEYS), key=str)
    if missing:
        return f"it has no {PAYLOAD_NAMES[missing[0]]}"
    if unknown:
        return f"it holds an unknown part {unknown[0]!r}"
    if payload["format"] != FORMAT:
        return f"its format is {payload['format']!r}, this minillama reads {FORMAT}"
    if not isinstance(payload["fingerprint"], dict):
        return "its fingerprint is not a table of settings"
    difference = first_difference(payload["fingerprint"], fingerprint)
    if difference:
        return f"belongs to another run ({difference})"
    loop = payload["loop"]
    return (_weights_problem(payload["weights"], trainable, "weights")
            or _loop_problem(loop, trainable, steps_per_epoch, epochs, record_fields)
            or _optimizer_problem(payload["optimizer"], optimizer, loop["step_index"])
            or _random_problem(payload["random"]))


def load(directory: str, fingerprint: Dict[str, Any], trainable: Dict[str, torch.Tensor], optimizer,
         steps_per_epoch: int, epochs: int, record_fields: Collection[str]) -> LoopState:
    """Restore weights, optimizer and random states from the checkpoint; return the loop state.
    `steps_per_epoch`, `epochs` and `record_fields` (an epoch record's keys) are what the loop
    state must fit."""
    require_checkpoint(directory)
    path = checkpoint_path(directory)
    payload = read_checkpoint(path)
    problem = check_payload(payload, fingerprint, trainable, optimizer, steps_per_epoch, epochs, record_fields)
    if problem and problem.startswith("belongs to another run"):
        raise MinillamaError(f"{path} {problem}: resume with the same model, option, data and settings, "
                             "or choose another --checkpoint_dir")
    if problem:
        raise MinillamaError(f"{path} does not fit this run: {problem}; delete it to start over")
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(payload["weights"][name].to(p.device, p.dtype))
    optimizer.load_state_dict(payload["optimizer"])
    _set_random_states(payload["random"])
    return LoopState(**payload["loop"])
