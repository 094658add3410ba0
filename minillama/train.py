"""The training loop shared by every trainable option and task: AdamW on the
parameters that require grad, a learning-rate schedule, epochs over shuffled
batches, a dev score after each epoch, the best-dev weights kept in memory and
restored at the end, optional early stopping and bf16 autocast.

What is optimised is an `Objective` (a loss per task, one loop for all):
- `Classification`: a classifier, forward(input_ids [B, T], attention_mask [B, T])
  -> scores [B, num_labels] (logits or log-likelihoods); the loss is the
  cross-entropy of their softmax, the dev score the accuracy.
- `CausalLM`: a backbone, forward(input_ids, attention_mask) -> (logits [B, T, V], hidden);
  batch.labels [B, T] holds the next-token targets (-100 where nothing is scored);
  the loss is their mean cross-entropy, the dev score minus the dev loss.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import Split
from .errors import MinillamaError
from . import distributed, resume
from .core.optimizer import AdamW
from .flags import flag
from .resume import LoopState
from .runconfig import RunConfig

SCHEDULES = ("constant", "linear", "cosine")
IGNORE = -100  # a label that is not scored (CausalLM)


@dataclass
class TrainConfig:
    """The shared loop's settings (every training option and task).  Where and how it
    runs (device, bf16, the seed of the batch order, progress bars) is the RunConfig's."""

    epochs: int = flag(5, "--epochs", readers="training", help="default {default}")
    lr: Optional[float] = flag(None, "--lr", readers="training", type=float,  # None: resolved by `with_lr`
                               help="learning rate (default: the method's; {method_lrs})")
    batch_size: int = flag(8, "--batch_size", readers="batch", help="default {default}")
    weight_decay: float = flag(0.0, "--weight_decay", readers="training", help="default {default}")
    patience: Optional[int] = flag(None, "--patience", readers="training", type=int,
                                   help="early stopping: epochs without dev improvement (default: never stop early)")
    min_delta: float = flag(0.0, "--min_delta", readers="training",
                            help="early stopping: smallest improvement that counts (default {default})")
    lr_schedule: Optional[str] = flag(None, "--lr_schedule", readers="training", choices=SCHEDULES,
                                      help="after --warmup_steps (default: constant; --task e2e: linear decay, "
                                           "the paper's)")
    warmup_steps: int = flag(0, "--warmup_steps", readers="training",
                             help="linear warm-up steps from 0 to lr (default {default})")
    grad_accum: int = flag(1, "--grad_accum", readers="training",
                           help="split each batch into N micro-batches (the same step, less memory)")
    max_grad_norm: Optional[float] = flag(None, "--max_grad_norm", readers="training", type=float,
                                          help="clip the trainable parameters' global gradient norm (default off)")
    head_lr: Optional[float] = flag(None, "--head_lr", readers="head", type=float,  # "head.*" parameters
                                    help="learning rate of a new classification head (default: --lr)")
    checkpoint_dir: Optional[str] = flag(None, "--checkpoint_dir", readers="training",
                                         help="write a resumable checkpoint there after every epoch")
    save_every: Optional[int] = flag(None, "--save_every", readers="training", type=int,
                                     help="... and every N optimisation steps")
    resume: bool = flag(False, "--resume", readers="training",
                        help="continue from --checkpoint_dir's last whole checkpoint")

    def __post_init__(self):
        positive = {"--epochs": self.epochs, "--batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise MinillamaError(f"{name} must be a positive integer, got {value}")
        if self.lr is not None and not 0.0 <= self.lr < math.inf:
            raise MinillamaError(f"--lr must be >= 0 and finite, got {self.lr}")
        if not 0.0 <= self.weight_decay < math.inf:
            raise MinillamaError(f"--weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience <= 0):
            raise MinillamaError(f"--patience must be a positive number of epochs, got {self.patience}")
        if not 0.0 <= self.min_delta < math.inf:
            raise MinillamaError(f"--min_delta must be >= 0 and finite, got {self.min_delta}")
        if self.lr_schedule is not None and self.lr_schedule not in SCHEDULES:
            raise MinillamaError(f"--lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise MinillamaError(f"--warmup_steps must be an integer >= 0, got {self.warmup_steps}")
        if not isinstance(self.grad_accum, int) or self.grad_accum <= 0:
            raise MinillamaError(f"--grad_accum must be a positive number of micro-batches, got {self.grad_accum}")
        if self.grad_accum > self.batch_size:
            raise MinillamaError(f"--grad_accum {self.grad_accum} splits a batch of {self.batch_size} into more "
                                 "micro-batches than it has examples: lower it or raise --batch_size")
        for name, value in (("--max_grad_norm", self.max_grad_norm), ("--head_lr", self.head_lr)):
            if value is not None and not 0.0 < value < math.inf:
                raise MinillamaError(f"{name} must be a finite number > 0, got {value}")
        if self.save_every is not None and (not isinstance(self.save_every, int) or self.save_every <= 0):
            raise MinillamaError(f"--save_every must be a positive number of steps, got {self.save_every}")
        if (self.resume or self.save_every) and not self.checkpoint_dir:
            raise MinillamaError("--resume and --save_every need --checkpoint_dir DIR (where checkpoints live)")

    def with_lr(self, default_lr: float) -> "TrainConfig":
        """This config with lr filled in from the method's default when none was given."""
        return self if self.lr is not None else replace(self, lr=default_lr)

    def with_schedule(self, default: str) -> "TrainConfig":
        """This config with the task's schedule when none was given."""
        return self if self.lr_schedule is not None else replace(self, lr_schedule=default)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: Optional[float]  # classification only
    dev_acc: Optional[float] = None   # Classification's dev score
    dev_loss: Optional[float] = None  # CausalLM's dev score (lower is better)
    seconds: float = 0.0              # wall time of the epoch's training steps
    step_losses: List[float] = field(default_factory=list)  # the loss of every step (curves)


def autocast(device: torch.device, enabled: bool):
    """bf16 mixed precision when asked for; otherwise a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) distinct parameters (tied weights count once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe_trainable(model: nn.Module) -> str:
    """The one trainable share every run prints: trainable / all parameters of what runs
    (frozen base + what the method adds + any head; tied weights once)."""
    trainable, total = count_parameters(model)
    return (f"trainable parameters: {trainable:,} of {total:,} "
            f"({100.0 * trainable / total:.4f}% of all parameters: base, adapter and head)")


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int, device: torch.device, bf16: bool = False,
            progress: bool = True, desc: str = "eval") -> torch.Tensor:
    """Predicted label per example, in split order: [N] long."""
    was_training = model.training
    model.eval()
    preds = torch.zeros(len(split), dtype=torch.long)
    filled = torch.zeros(len(split), dtype=torch.bool)
    bar = tqdm(split.batches(batch_size), total=split.num_batches(batch_size), desc=desc,
               disable=not progress, leave=False)
    for batch in bar:
        batch = distributed.shard(batch).to(device)  # under torchrun: this rank's rows
        if len(batch.input_ids) == 0:
            continue
        with autocast(device, bf16):
            scores = model(batch.input_ids, batch.attention_mask)
        preds[batch.indices] = scores.argmax(dim=-1).cpu()
        filled[batch.indices] = True
    model.train(was_training)
    return distributed.gather_rows(preds, filled)


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item()


# -- objectives ---------------------------------------------------------------------------------
class Classification:
    """Cross-entropy over a classifier's scores; dev score: accuracy."""

    def loss(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Optional[int]]:
        scores = model(batch.input_ids, batch.attention_mask)
        return F.cross_entropy(scores.float(), batch.labels), int((scores.argmax(-1) == batch.labels).sum())

    def dev_score(self, model: nn.Module, dev, batch_size: int, run: RunConfig) -> Dict[str, float]:
        preds = predict(model, dev, batch_size, run.device, run.bf16, run.progress, "dev")
        return {"dev_acc": accuracy(preds, dev.labels)}

    @staticmethod
    def weight(batch) -> int:
        """What the mean loss averages over: examples."""
        return len(batch.labels)

    @staticmethod
    def better(scores: Dict[str, float]) -> float:
        return scores["dev_acc"]


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits [B, T, V] against labels [B, T] (IGNORE where not scored)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction)


class CausalLM:
    """Next-token cross-entropy on the scored labels; dev score: minus the dev loss."""

    def loss(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Optional[int]]:
        logits, _ = model(batch.input_ids, batch.attention_mask)
        return lm_loss(logits, batch.labels), None

    @torch.no_grad()
    def dev_score(self, model: nn.Module, dev, batch_size: int, run: RunConfig) -> Dict[str, float]:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in tqdm(dev.batches(batch_size), total=dev.num_batches(batch_size), desc="dev loss",
                          disable=not run.progress, leave=False):
            batch = distributed.shard(batch).to(run.device)  # under torchrun: this rank's rows
            if len(batch.input_ids) == 0:
                continue
            with autocast(run.device, run.bf16):
                logits, _ = model(batch.input_ids, batch.attention_mask)
            total += lm_loss(logits, batch.labels, reduction="sum").item()
            count += int((batch.labels != IGNORE).sum())
        model.train(was_training)
        total, count = distributed.all_sum([total, count])
        return {"dev_loss": total / max(count, 1)}

    @staticmethod
    def weight(batch) -> int:
        """What the mean loss averages over: scored tokens."""
        return int((batch.labels != IGNORE).sum())

    @staticmethod
    def better(scores: Dict[str, float]) -> float:
        return -scores["dev_loss"]


class NonFiniteLoss(MinillamaError):
    """Training diverged: the loss became inf or NaN (usually a learning rate too high)."""


def micro_batches(batch, n: int) -> List:
    """The batch's rows in n nearly equal consecutive pieces (grad accumulation)."""
    if n == 1:
        return [batch]
    parts = [torch.tensor_split(t, n) for t in (batch.input_ids, batch.attention_mask, batch.labels, batch.indices)]
    return [type(batch)(*piece) for piece in zip(*parts) if len(piece[0])]


def clip_grad_norm(params: List[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients so their global L2 norm is at most max_norm; returns the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads))
    scale = max_norm / (float(total) + 1e-6)
    if scale < 1.0:
        for g in grads:
            g.mul_(scale)
    return float(total)


def train_step(model: nn.Module, optimizer, batch, device: torch.device, bf16: bool = False,
               objective=None, grad_accum: int = 1, max_grad_norm: Optional[float] = None) -> Tuple[float, Optional[int]]:
    """One optimisation step on one batch: (loss, number of correct predictions or None).

    With grad_accum N the batch runs as N micro-batches whose gradients add up to the
    batch's own: each micro-batch's mean loss is weighted by its share of the batch's
    examples (Classification) or scored tokens (CausalLM).  A non-finite loss raises
    NonFiniteLoss before the step, so the weights stay finite."""
    objective = objective or Classification()
    batch = batch.to(device)
    optimizer.zero_grad(set_to_none=True)
    total = float(objective.weight(batch))   # the whole (global) batch's examples or tokens
    local, scale = distributed.shard(batch), distributed.world()[1]  # DDP averages over ranks: undo it
    if len(local.input_ids) == 0:  # fewer rows than ranks: a stand-in row that weighs nothing
        local, scale = micro_batches(batch, len(batch.input_ids))[0], 0.0
    pieces = micro_batches(local, min(grad_accum, len(local.input_ids)))
    value, correct = 0.0, None
    for i, piece in enumerate(pieces):
        w = float(objective.weight(piece)) / total * scale
        sync = contextlib.nullcontext() if i == len(pieces) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, bf16):
                loss, n_correct = objective.loss(model, piece)
            if not math.isfinite(loss.item()):
                raise NonFiniteLoss(f"the training loss is {loss.item()}")
            (loss * w).backward()
        value += loss.item() * w
        correct = None if n_correct is None else (correct or 0) + (n_correct if scale else 0)
    value, n = distributed.all_sum([value / max(distributed.world()[1], 1), correct or 0], device)
    if max_grad_norm is not None:
        clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()
    return value, None if correct is None else int(n)


HEADS = ("head.", "heads.")  # new heads: HeadClassifier's, and RowReader's one per task


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> AdamW:
    """AdamW on the trainable parameters; a new head ("head.*", or "heads.<task>.*") at
    cfg.head_lr when given.  Each group keeps its `base_lr`; the schedule scales it every step."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    if cfg.lr is None:
        raise ValueError("TrainConfig.lr is None: resolve it with cfg.with_lr(method default) first")
    head = [p for n, p in params.items() if n.startswith(HEADS)] if cfg.head_lr is not None else []
    if cfg.head_lr is not None and not head:
        raise MinillamaError("--head_lr is the learning rate of a new classification head, and this model trains "
                             "none (the verbalizer and --task e2e have no head): drop --head_lr")
    rest = [p for n, p in params.items() if not (head and n.startswith(HEADS))]
    groups = [{"params": rest, "lr": cfg.lr, "base_lr": cfg.lr}] if rest else []
    if head:
        groups.append({"params": head, "lr": cfg.head_lr, "base_lr": cfg.head_lr})
    return AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, schedule: Optional[str], warmup: int) -> float:
    """The multiplier of the base lr at optimisation step `step` (0-based) of `total`:
    linear warm-up over `warmup` steps, then constant, linear decay to 0, or cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule in (None, "constant"):
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - progress) if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def check_warmup(cfg: TrainConfig, batches_per_epoch: int):
    """A warm-up longer than the run never reaches --lr (every step would train at a fraction of
    it): refused before training, saying the most the lr would reach."""
    total = cfg.epochs * batches_per_epoch
    if cfg.warmup_steps > total:
        raise MinillamaError(f"--warmup_steps {cfg.warmup_steps} is longer than this run's {total} optimisation steps "
                             f"({cfg.epochs} epoch(s) x {batches_per_epoch} batch(es) of {cfg.batch_size}): the lr "
                             f"would climb to {100 * total / cfg.warmup_steps:.3g}% of --lr {cfg.lr:g} at most; "
                             f"use --warmup_steps {total} or fewer")


def run_fingerprint(model: nn.Module, cfg: TrainConfig, run: RunConfig, extra: Optional[Dict] = None) -> Dict:
    """The settings a resumed run must share with the one that wrote the checkpoint."""
    fp = {f"training.{k}": v for k, v in asdict(cfg).items() if k not in ("checkpoint_dir", "save_every", "resume")}
    fp.update({"run.seed": run.seed, "run.bf16": run.bf16, "run.dtype": run.dtype,
               "run.tokenizer": resume.resolved(run.tokenizer_path),
               "trainable": {n: list(p.shape) for n, p in trainable_parameters(model).items()}})
    fp.update(extra or {})
    return fp


def fit(model: nn.Module, train, dev, cfg: TrainConfig, run: Optional[RunConfig] = None,
        log: Callable[[str], None] = print, on_epoch: Optional[Callable[[EpochResult], None]] = None,
        objective=None, fingerprint: Optional[Dict] = None) -> List[EpochResult]:
    """Train, scoring dev after each epoch; at the end the model holds the trainable
    weights of its best dev epoch (kept as an in-memory copy).  `objective`:
    Classification() (default) or CausalLM().  `log` prints a line per epoch;
    `on_epoch` receives each EpochResult (run logs).  With cfg.checkpoint_dir the loop
    writes a resumable checkpoint after every epoch (and every cfg.save_every steps);
    cfg.resume continues from it exactly (minillama/resume.py); `fingerprint` adds the
    caller's settings (model, option, method, data by content) to what must match.  The
    directory is locked for the loop's duration: a second run there is refused.

    train acc is measured on the fly over the epoch's batches (with dropout, as
    the weights move), which costs nothing, unlike a second pass over train.
    A non-finite loss stops training with a MinillamaError naming the epoch and step."""
    run, objective = run or RunConfig(), objective or Classification()
    distributed.check_global_batch(cfg.batch_size)  # the CLI checks it before loading; callers of fit too
    if cfg.checkpoint_dir:  # a missing checkpoint or a bad directory fails now, not after an epoch
        if cfg.resume:
            resume.require_checkpoint(cfg.checkpoint_dir)
        resume.prepare_directory(cfg.checkpoint_dir)
    with resume.run_lock(cfg.checkpoint_dir):  # one run at a time writes there
        return _fit(model, train, dev, cfg, run, log, on_epoch, objective, fingerprint)


def _fit(model: nn.Module, train, dev, cfg: TrainConfig, run: RunConfig, log: Callable[[str], None],
         on_epoch: Optional[Callable[[EpochResult], None]], objective,
         fingerprint: Optional[Dict]) -> List[EpochResult]:
    """fit's loop, with the checkpoint directory (if any) locked."""
    model.to(run.device)
    optimizer = make_optimizer(model, cfg)
    trainable = trainable_parameters(model)
    net = distributed.wrap(model, run.device)  # DDP when distributed: sums the gradients of what trains
    fingerprint = run_fingerprint(model, cfg, run, fingerprint)
    generator = torch.Generator().manual_seed(run.seed)
    per_epoch = train.num_batches(cfg.batch_size)
    check_warmup(cfg, per_epoch)
    state = LoopState(data_rng=generator.get_state())
    saved_at = []  # (epoch, step) of the checkpoint on disk, named if the next one cannot be written
    if cfg.resume:
        state = resume.load(cfg.checkpoint_dir, fingerprint, trainable, optimizer, per_epoch, cfg.epochs,
                            [f.name for f in fields(EpochResult)])
        saved_at.append((state.epoch, state.step_in_epoch))
        log(f"resumed from {resume.checkpoint_path(cfg.checkpoint_dir)}: epoch {state.epoch}, "
            f"step {state.step_in_epoch} of {per_epoch}")
        for record in state.history:
            if on_epoch is not None:
                on_epoch(EpochResult(**record))

    def checkpoint():
        if cfg.checkpoint_dir:
            resume.save(cfg.checkpoint_dir, state, trainable, optimizer, fingerprint,
                        kept=saved_at[-1] if saved_at else None)
            saved_at.append((state.epoch, state.step_in_epoch))

    epochs = tqdm(range(state.epoch, cfg.epochs), desc="epochs", disable=not run.progress)
    for epoch in epochs:
        if state.stopped:
            break
        model.train()
        generator.set_state(state.data_rng)  # this epoch's order, also when resuming inside it
        start, skip = time.perf_counter(), state.step_in_epoch
        bar = tqdm(train.batches(cfg.batch_size, shuffle=True, generator=generator), total=per_epoch,
                   desc=f"train-{epoch}", disable=not run.progress, leave=False)
        for step, batch in enumerate(bar, start=1):
            if step <= skip:  # done before the interruption
                continue
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(state.step_index, cfg.epochs * per_epoch,
                                                           cfg.lr_schedule, cfg.warmup_steps)
            try:
                loss, n_correct = train_step(net, optimizer, batch, run.device, run.bf16, objective,
                                             cfg.grad_accum, cfg.max_grad_norm)
            except NonFiniteLoss as e:
                raise NonFiniteLoss(f"{e} at epoch {epoch}, step {step}: training diverged, nothing was written; "
                                    f"lower --lr (now {cfg.lr:g})") from None
            state.step_index, state.step_in_epoch = state.step_index + 1, step
            state.epoch_loss += loss
            state.epoch_correct += n_correct or 0
            state.epoch_seen += len(batch.input_ids) if n_correct is not None else 0
            state.step_losses.append(loss)
            bar.set_postfix(loss=f"{state.epoch_loss / step:.4f}")
            if cfg.save_every and state.step_index % cfg.save_every == 0 and step < per_epoch:
                checkpoint()
        scores = objective.dev_score(model, dev, cfg.batch_size, run)
        result = EpochResult(epoch, state.epoch_loss / max(per_epoch, 1),
                             state.epoch_correct / state.epoch_seen if state.epoch_seen else None,
                             seconds=time.perf_counter() - start, step_losses=list(state.step_losses), **scores)
        if on_epoch is not None:
            on_epoch(result)
        log(describe_epoch(result))
        score = objective.better(scores)
        if score > state.best + cfg.min_delta or state.best_state is None:
            state.best, state.since_best = score, 0
            state.best_state = {n: p.detach().clone() for n, p in trainable.items()}
        else:
            state.since_best += 1
            if cfg.patience is not None and state.since_best >= cfg.patience:
                log(f"early stopping: no dev improvement above {cfg.min_delta} for {cfg.patience} epoch(s)")
                state.stopped = True
        state.history.append(asdict(result))
        state.epoch, state.step_in_epoch, state.data_rng = epoch + 1, 0, generator.get_state()
        state.epoch_loss, state.epoch_correct, state.epoch_seen, state.step_losses = 0.0, 0, 0, []
        checkpoint()
    restore(model, state.best_state)
    return [EpochResult(**r) for r in state.history]


def describe_epoch(r: EpochResult) -> str:
    """'epoch 0: train loss :: 1.234, train acc :: 0.500, dev acc :: 0.250' (the course's format);
    for CausalLM the dev loss instead of the accuracies, and the epoch's training wall time."""
    parts = [f"epoch {r.epoch}: train loss :: {r.train_loss:.3f}"]
    if r.train_acc is not None:
        parts.append(f"train acc :: {r.train_acc:.3f}")
    if r.dev_acc is not None:
        parts.append(f"dev acc :: {r.dev_acc:.3f}")
    if r.dev_loss is not None:
        parts.append(f"dev loss :: {r.dev_loss:.3f}, {r.seconds:.1f} s")
    return ", ".join(parts)


@torch.no_grad()
def restore(model: nn.Module, state: Optional[Dict[str, torch.Tensor]]):
    """Copy saved trainable weights back into the model's parameters."""
    if state is None:
        return
    params = dict(model.named_parameters())
    for name, value in state.items():
        params[name].copy_(value)
