"""The training loop shared by every trainable classification option
(finetune, lora, prefix ...): AdamW on the parameters that require grad,
epochs over shuffled batches, evaluation on dev after each epoch, the
best-dev-accuracy weights kept in memory and restored at the end, optional
early stopping and bf16 autocast.

A classifier here is any nn.Module with
    forward(input_ids [B, T], attention_mask [B, T]) -> scores [B, num_labels]
(logits or log-likelihoods: the prediction is the argmax, the loss the
cross-entropy of the softmax over them).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import Split
from .errors import MinillamaError
from .optimizer import AdamW
from .runconfig import RunConfig


@dataclass
class TrainConfig:
    """The shared loop's settings (every training option and task).  Where and how it
    runs (device, bf16, the seed of the batch order, progress bars) is the RunConfig's."""

    epochs: int = 5
    lr: Optional[float] = None      # None: the method's default_lr (adapters/); resolved by `with_lr`
    batch_size: int = 8
    weight_decay: float = 0.0
    patience: Optional[int] = None  # epochs without a dev improvement before stopping; None: never stop early
    min_delta: float = 0.0          # a dev score must beat the best by more than this to count

    def __post_init__(self):
        positive = {"--epochs": self.epochs, "--batch_size": self.batch_size}
        for flag, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise MinillamaError(f"{flag} must be a positive integer, got {value}")
        if self.lr is not None and not 0.0 <= self.lr < math.inf:
            raise MinillamaError(f"--lr must be >= 0 and finite, got {self.lr}")
        if not 0.0 <= self.weight_decay < math.inf:
            raise MinillamaError(f"--weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience <= 0):
            raise MinillamaError(f"--patience must be a positive number of epochs, got {self.patience}")
        if not 0.0 <= self.min_delta < math.inf:
            raise MinillamaError(f"--min_delta must be >= 0 and finite, got {self.min_delta}")

    def with_lr(self, default_lr: float) -> "TrainConfig":
        """This config with lr filled in from the method's default when none was given."""
        return self if self.lr is not None else replace(self, lr=default_lr)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    dev_acc: float


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
    trainable, total = count_parameters(model)
    return f"trainable parameters: {trainable:,} of {total:,} ({100.0 * trainable / total:.4f}% of the model)"


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int, device: torch.device, bf16: bool = False,
            progress: bool = True, desc: str = "eval") -> torch.Tensor:
    """Predicted label per example, in split order: [N] long."""
    was_training = model.training
    model.eval()
    preds = torch.empty(len(split), dtype=torch.long)
    bar = tqdm(split.batches(batch_size), total=split.num_batches(batch_size), desc=desc,
               disable=not progress, leave=False)
    for batch in bar:
        batch = batch.to(device)
        with autocast(device, bf16):
            scores = model(batch.input_ids, batch.attention_mask)
        preds[batch.indices] = scores.argmax(dim=-1).cpu()
    model.train(was_training)
    return preds


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item()


class NonFiniteLoss(MinillamaError):
    """Training diverged: the loss became inf or NaN (usually a learning rate too high)."""


def train_step(model: nn.Module, optimizer, batch, device: torch.device, bf16: bool = False) -> Tuple[float, int]:
    """One optimisation step on one batch: (loss, number of correct predictions).
    A non-finite loss raises NonFiniteLoss before the step, so the weights stay finite."""
    batch = batch.to(device)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, bf16):
        scores = model(batch.input_ids, batch.attention_mask)
    loss = F.cross_entropy(scores.float(), batch.labels)
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the training loss is {value}")
    loss.backward()
    optimizer.step()
    return value, int((scores.argmax(-1) == batch.labels).sum())


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> AdamW:
    params = list(trainable_parameters(model).values())
    if not params:
        raise ValueError("the model has no trainable parameters")
    if cfg.lr is None:
        raise ValueError("TrainConfig.lr is None: resolve it with cfg.with_lr(method default) first")
    return AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: nn.Module, train: Split, dev: Split, cfg: TrainConfig, run: Optional[RunConfig] = None,
        log: Callable[[str], None] = print,
        on_epoch: Optional[Callable[[EpochResult], None]] = None) -> List[EpochResult]:
    """Train, evaluating on dev after each epoch; at the end the model holds the
    trainable weights of its best dev epoch (kept as an in-memory copy).
    `log` prints a line per epoch; `on_epoch` receives each EpochResult (run logs).

    train acc is measured on the fly over the epoch's batches (with dropout, as
    the weights move), which costs nothing, unlike a second pass over train.
    A non-finite loss stops training with a MinillamaError naming the epoch and step."""
    run = run or RunConfig()
    model.to(run.device)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(run.seed)
    best_acc, best_state, since_best = -1.0, None, 0
    history = []
    epochs = tqdm(range(cfg.epochs), desc="epochs", disable=not run.progress)
    for epoch in epochs:
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(train.batches(cfg.batch_size, shuffle=True, generator=generator),
                   total=train.num_batches(cfg.batch_size), desc=f"train-{epoch}", disable=not run.progress,
                   leave=False)
        for step, batch in enumerate(bar, start=1):
            try:
                loss, n_correct = train_step(model, optimizer, batch, run.device, run.bf16)
            except NonFiniteLoss as e:
                raise NonFiniteLoss(f"{e} at epoch {epoch}, step {step}: training diverged, nothing was written; "
                                    f"lower --lr (now {cfg.lr:g})") from None
            total_loss += loss
            correct += n_correct
            seen += len(batch.labels)
            bar.set_postfix(loss=f"{total_loss / step:.4f}")
        dev_acc = accuracy(predict(model, dev, cfg.batch_size, run.device, run.bf16, run.progress, "dev"),
                           dev.labels)
        result = EpochResult(epoch, total_loss / max(step, 1), correct / max(seen, 1), dev_acc)
        history.append(result)
        if on_epoch is not None:
            on_epoch(result)
        log(f"epoch {epoch}: train loss :: {result.train_loss:.3f}, train acc :: {result.train_acc:.3f}, "
            f"dev acc :: {dev_acc:.3f}")
        if dev_acc > best_acc + cfg.min_delta or best_state is None:
            best_acc, since_best = dev_acc, 0
            best_state = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
        else:
            since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                log(f"early stopping: no dev improvement above {cfg.min_delta} for {cfg.patience} epoch(s)")
                break
    restore(model, best_state)
    return history


@torch.no_grad()
def restore(model: nn.Module, state: Optional[Dict[str, torch.Tensor]]):
    """Copy saved trainable weights back into the model's parameters."""
    if state is None:
        return
    params = dict(model.named_parameters())
    for name, value in state.items():
        params[name].copy_(value)
