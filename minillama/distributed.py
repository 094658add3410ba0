"""Several processes, one training run: torch.distributed (DDP) under torchrun.

    torchrun --nproc_per_node N run_llama.py --option finetune|lora|prefix ...

Every rank builds the same model and draws the same batches (same seed); each takes
its share of every batch's rows (`shard`), so --batch_size stays the global batch.
DistributedDataParallel sums the gradients of what trains (frozen base weights get no
gradient, so nothing of theirs is synchronised).  Evaluation is sharded the same way
and gathered without duplicates (`gather_rows`).  Rank 0 alone prints, writes outputs,
adapters and checkpoints (files.atomic_write asks `is_main`).  gloo on CPU, NCCL on GPU.
Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op.

Equal to one process only without dropout: every rank seeds its random generator alike
and draws the dropout masks of its own rows, which are not the masks one process draws for
the whole batch (so with --hidden_dropout_prob > 0 the weights and accuracies differ a little;
the printed losses are still the mean over every rank's rows).

A user mistake under torchrun: every rank meets it, rank 0 alone prints the one line and
every rank exits 2 (`report_failure`); torchrun then adds its own report of the failed
ranks (a traceback ending in ChildFailedError) and exits 1.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

from .errors import MinillamaError


def world() -> Tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0, or torchrun's RANK 0 before the process group is joined (no rank prints twice)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def launched_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(use_gpu: bool) -> Optional[str]:
    """Join the process group torchrun set up; returns this rank's device, or None when
    not launched by torchrun.  gloo on CPU; NCCL on GPU, one GPU per rank."""
    size = launched_world_size()
    if size <= 1 or dist.is_initialized():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu:
        check_gpus(size, torch.cuda.device_count())
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return f"cuda:{local_rank}"
    dist.init_process_group("gloo")
    return "cpu"


def check_gpus(ranks: int, gpus: int):
    """--use_gpu runs one rank per GPU."""
    if gpus == 0:
        raise MinillamaError(f"torchrun started {ranks} ranks with --use_gpu but this machine has no CUDA GPU: "
                             "drop --use_gpu (gloo on CPU) or run on a machine with GPUs")
    if gpus < ranks:
        raise MinillamaError(f"torchrun started {ranks} ranks with --use_gpu but this machine has {gpus} GPU(s), "
                             f"one per rank: use --nproc_per_node {gpus} or fewer, or drop --use_gpu (gloo on CPU)")


def check_global_batch(batch_size: int):
    """Training splits every global batch evenly among the ranks (checked from the flags,
    before anything loads)."""
    ranks = world()[1]
    if batch_size % ranks:
        raise MinillamaError(f"--batch_size {batch_size} is the global batch and must divide evenly among "
                             f"the {ranks} ranks: use a multiple of {ranks}")


FAILURE_GRACE_S = 5.0  # how long another rank waits for rank 0 to report the mistake it also met


def report_failure(line: str):
    """Print a user mistake's one line once.  Rank 0 prints it and exits; torchrun then stops
    the other ranks, which met the same mistake and wait silently, exiting 2 on torchrun's
    SIGTERM.  A rank still alive after FAILURE_GRACE_S met a mistake rank 0 did not: it prints
    the line itself (naming its rank), so no mistake goes unsaid."""
    if is_main():
        print(line, file=sys.stderr)
        return
    signal.signal(signal.SIGTERM, lambda *_: os._exit(2))
    time.sleep(FAILURE_GRACE_S)
    print(f"{line} (rank {os.environ.get('RANK')})", file=sys.stderr)


def barrier():
    """Wait for every rank (a no-op outside a distributed run)."""
    if world()[1] > 1:
        dist.barrier()


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(status: int):
    """End this rank's process with `status` (a no-op outside a distributed run).  After a
    success every rank first waits for the others, so rank 0 has written its outputs; then the
    process group is destroyed while the interpreter is whole, and the process exits at once
    (os._exit, streams flushed).  Why not a normal exit: once DistributedDataParallel has
    wrapped a model, torch's C++ side keeps the gloo process group alive past
    destroy_process_group, and its teardown during interpreter shutdown can abort a rank
    (SIGABRT, "terminate called without an active exception") after its work is done."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if status == 0:
        try:
            dist.barrier()
        except RuntimeError:  # another rank left with a failure it reported: torchrun names it
            pass
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def shard_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """Rows [start, end) of a batch of n rows for this rank: consecutive, sizes differ by at most one."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard(batch):
    """This rank's rows of a batch (a data.Batch); the whole batch outside a distributed run."""
    rank, size = world()
    if size == 1:
        return batch
    start, end = shard_bounds(len(batch.input_ids), rank, size)
    return type(batch)(*(t[start:end] for t in (batch.input_ids, batch.attention_mask, batch.labels,
                                                  batch.indices)))


def all_sum(values: List[float], device="cpu") -> List[float]:
    """Element-wise sum over ranks of a few numbers (losses, counts)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(local: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Each rank filled its own rows of `local` (the others are zero, `filled` marks them):
    the sum over ranks is every row exactly once."""
    if world()[1] == 1:
        return local
    out = local.clone()
    dist.all_reduce(out)
    count = filled.to(torch.long).clone()
    dist.all_reduce(count)
    if not bool((count == 1).all()):
        raise RuntimeError("distributed evaluation: a row was computed by no rank or by several")
    return out


def wrap(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """DistributedDataParallel around the model when distributed (else the model itself)."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    ids = [torch.device(device).index] if str(device).startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
