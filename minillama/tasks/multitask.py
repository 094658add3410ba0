"""`run_llama.py --option prefix --task_names a,b`: one deep prefix per task, trained in ONE run.

    --option prefix --task_names sst,cfimdb
        --train sst-train.txt,cfimdb-train.txt --dev sst-dev.txt,cfimdb-dev.txt
        --test sst-test.txt,cfimdb-test.txt --label-names sst.json,cfimdb.json
        [--shared_prefix_length N] [--dev_out a,b] [--test_out a,b] [--save_adapter a,b]

Comma lists give one entry per task, in --task_names order (as `--load_adapter A B
--adapter_names a,b` does for evaluation: tasks/classify.py's `run_mixed`).  Every batch
mixes the tasks' training rows (`TaskMix`: each task's rows in its own random order, spread
through the epoch in proportion to the task's size); each row reads its own task's prefix
(adapters/multi.TaskPrefixes) and answers through its own task's head or label names
(heads.RowReader).  With --shared_prefix_length N a row's prefix is [N shared positions |
its task's own P], the N one parameter that every task's rows train.

Deep prefixes only (--prefix_mode ptuning2, the classification default, or prefix, the MLP
folded after training): their keys and values are per row in the KV cache, so rows of
several tasks share one forward.  Prompt tuning and LLaMA-Adapter are refused in one line.

Outputs per task: `<name>-{dev,test}-prefix-output.txt` and the adapter
`<name>-prefix-adapter` (the shared positions then the task's own, with its head and label
names: `--load_adapter` evaluates it alone, with the same predictions), `<name>: dev acc :: `
lines; one curves PNG (the dev score per epoch: the mean of the tasks' dev accuracies, which
also picks the epoch kept).  `--checkpoint_dir` / `--resume` and torchrun work as for one
task: the shared loop (train.py) runs it, with the `PerTask` objective.
"""
from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import AdapterConfig, save_adapter
from ..adapters.multi import TaskPrefixes
from ..classification import (HIDDEN_DROPOUT_PROB, POOL_OF_HEAD, PREFIX_HEAD, check_reading, mixed_run_paths,
                              per_name, reader_kind, row_splits, write_row_results)
from ..curves import curves_path, plot_curves
from ..data import Split, read_examples, read_label_names
from ..errors import MinillamaError
from ..files import check_all_writable, check_distinct_paths
from ..flags import flag, flagged_fields, same_flag
from ..heads import RowReader, label_token_ids
from ..resume import data_identity, resolved
from ..runconfig import RunConfig
from ..runlog import RunLog
from ..train import Classification, TrainConfig, accuracy, check_warmup, describe_trainable, fit, predict

SPLITS = ("train", "dev", "test")
DEEP_PREFIXES = ("ptuning2", "prefix")  # the methods whose rows mix in one batch (adapters/multi.py)
NAME = re.compile(r"[A-Za-z0-9_.-]+")   # a task name names its output files


@dataclass
class TaskConfig:
    """One task of a multi-task run: its files and where its outputs go.  Its flags take one
    comma-separated entry per task (`MultitaskConfig.from_lists`); the outputs' may be left out."""

    name: str = flag(MISSING, "--task_names", readers="multitask", metavar="a,b,...",
                     help="train one deep prefix per task (ptuning2 or prefix) in one run, every batch mixing the "
                          "tasks, each row read through its own task's prefix and head; --train, --dev, --test, "
                          "--label-names (and --dev_out, --test_out, --save_adapter) then take one comma-separated "
                          "entry per task")
    train: str = same_flag(MISSING, "--train", readers="classify_train")
    dev: str = same_flag(MISSING, "--dev", readers="classify")
    test: str = same_flag(MISSING, "--test", readers="classify")
    label_names: str = same_flag(MISSING, "--label-names", readers="classify")
    dev_out: Optional[str] = same_flag(None, "--dev_out", readers="classify")  # None: <name>-dev-prefix-output.txt
    test_out: Optional[str] = same_flag(None, "--test_out", readers="classify")  # None: <name>-test-prefix-output.txt
    save_adapter: Optional[str] = same_flag(None, "--save_adapter", readers="save")  # None: <name>-prefix-adapter

    def __post_init__(self):
        if not NAME.fullmatch(self.name or ""):
            raise MinillamaError(f"--task_names: {self.name!r} cannot name output files: use letters, digits, "
                                 "'_', '-' and '.'")

    @property
    def outputs(self) -> Dict[str, str]:
        return {"dev": self.dev_out or f"{self.name}-dev-prefix-output.txt",
                "test": self.test_out or f"{self.name}-test-prefix-output.txt"}

    @property
    def adapter_path(self) -> str:
        """--save_adapter's entry, by default <name>-prefix-adapter beside the task's dev output."""
        return self.save_adapter or os.path.join(os.path.dirname(self.outputs["dev"]), f"{self.name}-prefix-adapter")


@dataclass
class MultitaskConfig:
    """Several classification tasks, one deep prefix each, trained together."""

    tasks: List[TaskConfig]
    method: AdapterConfig                # each task's own prefix (ptuning2 or prefix); the shared part alike
    shared_length: int = flag(0, "--shared_prefix_length", readers="multitask", metavar="N",
                              help="with --task_names: N prefix positions shared by every task, before each task's "
                                   "own --prefix_length (default {default})")
    head: str = same_flag(PREFIX_HEAD, "--prefix_head", readers="head")  # cls | mean | verbalizer, one per task
    hidden_dropout_prob: float = same_flag(HIDDEN_DROPOUT_PROB, "--hidden_dropout_prob", readers="head")
    max_sentence_len: Optional[int] = same_flag(None, "--max_sentence_len", readers="classify")
    training: TrainConfig = field(default_factory=TrainConfig)
    log_jsonl: Optional[str] = same_flag(None, "--log_jsonl", readers="log")
    wandb: bool = same_flag(False, "--wandb", readers="log")
    # a single-task run's flags this run cannot honour: read only to be refused in one line
    export_peft: Optional[str] = same_flag(None, "--export_peft", readers="export")
    export_adapterhub: Optional[str] = same_flag(None, "--export_adapterhub", readers="export_adapterhub")
    load_adapter: Optional[List[str]] = same_flag(None, "--load_adapter", readers="adapters")
    interpolate: Optional[float] = same_flag(None, "--interpolate", readers="adapters")
    trains: ClassVar[bool] = True

    REFUSED: ClassVar[Dict[str, str]] = {
        "export_peft": "--export_peft converts one adapter, and --task_names writes one per task: export a task's "
                       "with --load_adapter <its adapter> --export_peft DIR afterwards",
        "export_adapterhub": "--export_adapterhub converts a bottleneck adapter, and --task_names trains prefixes",
        "load_adapter": "--load_adapter evaluates saved adapters (several: --adapter_names), and --task_names "
                        "trains: drop one of the two",
        "interpolate": "--interpolate mixes two loaded adapters, and --task_names trains: drop one of the two"}

    @classmethod
    def from_lists(cls, lists: Dict[str, str], **settings) -> "MultitaskConfig":
        """From TaskConfig's flags, each a comma list ({field: "a,b"}): one entry per --task_names
        name (the outputs' lists may be left out), then `settings` (MultitaskConfig's fields)."""
        names = [n.strip() for n in lists["name"].split(",")]
        per_task = {}
        for f, spec in flagged_fields(TaskConfig):
            if f.name != "name" and (f.default is MISSING or lists.get(f.name)):
                per_task[f.name] = per_name(lists.get(f.name), names, spec.name, "task")
        return cls([TaskConfig(name, **{k: v[i] for k, v in per_task.items()}) for i, name in enumerate(names)],
                   **settings)

    def __post_init__(self):
        names = self.names
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise MinillamaError(f"--task_names: {twice!r} is named twice: give each task its own name")
        method = getattr(self.method, "method", None)
        if method not in DEEP_PREFIXES:
            raise MinillamaError(f"--task_names trains a deep prefix per task, whose rows mix in one batch: "
                                 f"--prefix_mode ptuning2 or prefix, not {method}")
        if isinstance(self.shared_length, bool) or not isinstance(self.shared_length, int) or self.shared_length < 0:
            raise MinillamaError(f"--shared_prefix_length must be a number of positions >= 0, got {self.shared_length}")
        check_reading(self.head, self.hidden_dropout_prob, self.max_sentence_len)
        for name, message in self.REFUSED.items():
            if getattr(self, name) is not None:
                raise MinillamaError(message)
        self.training = self.training.with_lr(self.method.lr_for("classify"))

    @property
    def names(self) -> List[str]:
        return [t.name for t in self.tasks]

    @property
    def curves(self) -> str:
        """One curves PNG for the run, beside the first task's dev output."""
        first = self.tasks[0].outputs["dev"]
        return curves_path(os.path.join(os.path.dirname(first), "-".join(self.names) + "-multitask"))


# -- the rows of several tasks -----------------------------------------------------------------
class TaskMix(Split):
    """Several tasks' splits as one (`task_of[i]`: the task of row i).  Its batches mix the
    tasks: each task's rows in their own order (random when shuffled), spread through the
    epoch by their place in it (row j of a task of n at (j + 1/2) / n), so every stretch of
    the epoch holds each task in proportion to its size."""

    def __init__(self, splits: Dict[str, Split]):
        first = next(iter(splits.values()))
        super().__init__([ex for s in splits.values() for ex in s.examples],
                         [ids for s in splits.values() for ids in s.token_ids], first.pad_id,
                         " + ".join(s.path for s in splits.values()))
        self.task_of = [name for name, s in splits.items() for _ in range(len(s))]
        self.sizes = [len(s) for s in splits.values()]

    def order(self, shuffle: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        rows, places, start = [], [], 0
        for n in self.sizes:
            rows.append(start + (torch.randperm(n, generator=generator) if shuffle else torch.arange(n)))
            places.append((torch.arange(n, dtype=torch.float64) + 0.5) / n)
            start += n
        # a stable sort: rows at the same place keep the tasks' order
        return torch.cat(rows)[torch.argsort(torch.cat(places), stable=True)]


class OneTask(nn.Module):
    """Rows all of one task through the per-row reader, as a plain classifier (train.predict's
    interface): forward(input_ids [B, T], attention_mask [B, T]) -> scores [B, K]."""

    def __init__(self, reader: RowReader, name: str):
        super().__init__()
        self.reader, self.name = reader, name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.reader(input_ids, attention_mask, [self.name] * len(input_ids)))


class PerTask(Classification):
    """The loss of each row under its own task's reader (the mean cross-entropy over the rows:
    every row counts alike, as in one task's run); dev score: the mean of the tasks' dev
    accuracies (each task counts alike, whatever its size).  `dev` is {task: Split}."""

    def __init__(self, task_of: Sequence[str]):
        self.task_of = task_of

    def loss(self, model: nn.Module, batch):
        scores = model(batch.input_ids, batch.attention_mask, [self.task_of[i] for i in batch.indices.tolist()])
        losses = [F.cross_entropy(row[None], label[None]) for row, label in zip(scores, batch.labels)]
        correct = sum(int(row.argmax() == label) for row, label in zip(scores, batch.labels))
        return torch.stack(losses).mean(), correct

    def dev_score(self, model: nn.Module, dev: Dict[str, Split], batch_size: int, run: RunConfig) -> Dict[str, float]:
        accs = {name: accuracy(predict(OneTask(model, name), split, batch_size, run.device, run.bf16, run.progress,
                                       f"dev {name}"), split.labels) for name, split in dev.items()}
        print("dev acc by task: " + ", ".join(f"{name} {acc:.3f}" for name, acc in accs.items()))
        return {"dev_acc": sum(accs.values()) / len(accs)}


# -- run ---------------------------------------------------------------------------------------
def fingerprint(run_cfg: RunConfig, cfg: MultitaskConfig) -> Dict:
    """What a resumed run must share with the interrupted one, beside the training settings."""
    tasks = {t.name: {split: data_identity(getattr(t, split)) for split in ("train", "dev", "label_names")}
             for t in cfg.tasks}
    return {"model": resolved(run_cfg.model_path), "norm": run_cfg.norm, "option": "prefix", "head": cfg.head,
            "method": cfg.method.to_dict(), "task_names": cfg.names, "shared_prefix_length": cfg.shared_length,
            "tasks": tasks, "max_sentence_len": cfg.max_sentence_len, "hidden_dropout_prob": cfg.hidden_dropout_prob}


def check_outputs(cfg: MultitaskConfig, files: Dict[str, List[str]], outs: Dict[str, List[str]]):
    """No two flags naming one file, every output writable: before the model loads."""
    adapters = {f"--save_adapter ({t.name}, {suffix})": t.adapter_path + suffix for t in cfg.tasks
                for suffix in (".json", ".safetensors")}
    checkpoint = cfg.training.checkpoint_dir and os.path.join(cfg.training.checkpoint_dir, "checkpoint.pt")
    check_distinct_paths({**mixed_run_paths(cfg.names, files, outs, []), **adapters, "--log_jsonl": cfg.log_jsonl,
                          "curves (beside the first --dev_out)": cfg.curves,
                          "--checkpoint_dir (checkpoint.pt)": checkpoint})
    check_all_writable({**{f"--{split}_out ({n})": p for split in outs for n, p in zip(cfg.names, outs[split])},
                        **{k: v for k, v in adapters.items() if k.endswith(".json)")},
                        "--log_jsonl": cfg.log_jsonl, "curves (beside the first --dev_out)": cfg.curves})


def build_reader(cfg: MultitaskConfig, model: nn.Module, tokenizer, labels: Dict[str, List[str]]) -> RowReader:
    """Each task's prefix (behind the shared positions) and its own new head, or its label names."""
    prefixes = TaskPrefixes(model, cfg.method, cfg.names, cfg.shared_length, tokenizer)
    if cfg.head == "verbalizer":
        readers = {name: label_token_ids(tokenizer, labels[name]) for name in cfg.names}
    else:
        readers = {name: nn.Linear(model.config.dim, len(labels[name])) for name in cfg.names}
    return RowReader(prefixes, readers, {name: POOL_OF_HEAD.get(cfg.head) for name in cfg.names},
                     cfg.hidden_dropout_prob)


def describe(cfg: MultitaskConfig, reader: RowReader) -> str:
    """One line: each row's prefix, and what trains."""
    prefixes = reader.multi
    shared = sum(p.numel() for p in prefixes.shared.parameters() if p.requires_grad) if prefixes.shared else 0
    own = sum(p.numel() for p in prefixes.tasks[cfg.names[0]].parameters() if p.requires_grad)
    head = sum(p.numel() for p in reader.heads.parameters())
    return (f"multi-task prefix: mode {cfg.method.method}, tasks {', '.join(cfg.names)}, each row reading "
            f"[{cfg.shared_length} shared | {cfg.method.length} own] positions, head {cfg.head}: {shared:,} shared + "
            f"{own:,} per task adapter parameters + {head:,} head parameters in all")


def save_task_adapters(cfg: MultitaskConfig, reader: RowReader, labels: Dict[str, List[str]]):
    """After training: the prefixes finalized, each task's adapter written on its own
    (the shared positions then its own, its head, its label names)."""
    prefixes = reader.multi.finalize()
    for task in cfg.tasks:
        head = reader.heads[task.name].state_dict() if task.name in reader.heads else None
        nbytes = save_adapter(prefixes.task_adapter(task.name), task.adapter_path, labels[task.name], head,
                              extra={"prefix_head": cfg.head, "dataset": task.name, "task_names": cfg.names,
                                     "shared_prefix_length": cfg.shared_length})
        print(f"{task.name}: saved adapter {task.adapter_path}.safetensors/.json ({nbytes:,} bytes: "
              f"{cfg.shared_length} shared + {cfg.method.length} own positions)")


def run(run_cfg: RunConfig, cfg: MultitaskConfig) -> Dict[str, Dict[str, float]]:
    """Train every task's prefix in one run; returns {task: {"dev": acc, "test": acc}}."""
    names = cfg.names
    files = {split: [getattr(t, split) for t in cfg.tasks] for split in SPLITS}
    outs = {split: [t.outputs[split] for t in cfg.tasks] for split in ("dev", "test")}
    labels = {t.name: read_label_names(t.label_names) for t in cfg.tasks}
    # every input and output check before the model loads; labels outside a task's names: file:line
    rows = {split: [len(read_examples(path, len(labels[n]))) for n, path in zip(names, files[split])]
            for split in SPLITS}
    check_warmup(cfg.training, -(-sum(rows["train"]) // cfg.training.batch_size))
    check_outputs(cfg, files, outs)

    model, tokenizer = run_cfg.load()
    print(f"load model from {run_cfg.model_path}")
    reader = build_reader(cfg, model, tokenizer, labels).to(run_cfg.device)
    print(describe(cfg, reader))
    print(describe_trainable(reader))
    splits = row_splits(reader, tokenizer, model.input_room - reader.multi.lengths[1], labels, files,
                        cfg.max_sentence_len)
    for name in names:
        print(f"task {name}: {reader_kind(reader, name)}, "
              + ", ".join(f"{split} {splits[name, split].path} ({len(splits[name, split])})" for split in SPLITS))
    train = TaskMix({name: splits[name, "train"] for name in names})

    with RunLog(cfg.log_jsonl, cfg.wandb, job="classify-multitask") as log:
        history = fit(reader, train, {name: splits[name, "dev"] for name in names}, cfg.training, run_cfg,
                      on_epoch=lambda r: log.log("epoch", epoch=r.epoch, train_loss=r.train_loss,
                                                 train_acc=r.train_acc, dev_acc=r.dev_acc),
                      objective=PerTask(train.task_of), fingerprint=fingerprint(run_cfg, cfg))
        plot_curves(history, cfg.curves, f"prefix on {' + '.join(names)} (dev: the tasks' mean)",
                    cfg.training.min_delta)
        print(f"wrote training curves to {cfg.curves}")
        save_task_adapters(cfg, reader, labels)
        preds = {(name, split): predict(OneTask(reader, name), splits[name, split], cfg.training.batch_size,
                                        run_cfg.device, run_cfg.bf16, run_cfg.progress, desc=f"{split} {name}")
                 for name in names for split in ("dev", "test")}
        results = write_row_results(names, {split: files[split] for split in outs}, outs, splits, preds)
        log.log("eval", **{f"{name}_{split}_acc": acc for name, accs in results.items() for split, acc in accs.items()})
    return results
