"""The command line of run_llama.py: flags -> typed configs -> one task's `run`.

Flag names follow the course's run_llama.py; options add their own groups.  This is
the only module that reads argparse's Namespace.  Every flag's default lives on its
config field (a flag not given is simply absent here, so the dataclass default
applies); the help texts read them from there.  User mistakes (MinillamaError)
print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import distributed, files
from .adapters import (BottleneckConfig, FullConfig, LlamaAdapterConfig, LoraConfig, PrefixConfig, PrefixTuningConfig,
                       PromptTuningConfig)
from .adapters.bottleneck import CONFIGS as BOTTLENECK_CONFIGS, DEFAULT_NON_LINEARITY, NON_LINEARITIES
from .errors import MinillamaError, show_one_line
from .adapters.llama_adapter import GATES
from .adapters.prefix import INITS
from .adapters.probe import HEADS as PROBE_HEADS, ProbeConfig
from .core.config import NORMS
from .formats import DTYPES
from .mmlu import MODES as MMLU_MODES, MMLUSettings
from .mmlu_data import SPLITS
from .runconfig import RunConfig, seed_everything
from .tasks.classify import DEFAULT_LABEL_NAMES, DEFAULT_TRAIN, HEADS, PREFIX_HEAD, PREFIX_MODE, ClassifyConfig
from .tasks.e2e import E2EConfig
from .tasks.generate import GenerateConfig
from .tasks.mmlu_eval import MMLUEvalConfig
from .tasks.mmlu_prefix import MMLUPrefixConfig
from .train import SCHEDULES, TrainConfig

OPTIONS = ("generate", "prompt", "finetune", "lora", "prefix", "bottleneck", "probe", "mmlu")
TASKS = ("classify", "mmlu", "e2e")
PREFIX_MODES = {"prefix": PrefixTuningConfig, "ptuning2": PrefixConfig, "prompt": PromptTuningConfig,
                "adapter": LlamaAdapterConfig}
OPTION_METHODS = {"finetune": FullConfig, "lora": LoraConfig, **PREFIX_MODES, "bottleneck": BottleneckConfig,
                  "probe": ProbeConfig}


def lr_defaults() -> str:
    """Every method's default learning rate and its per-task ones, for --lr's help."""
    def words(config) -> str:
        tasks = ", ".join(f"{task} {lr:g}" for task, lr in config.task_lr.items())
        return f"{config.method} {config.default_lr:g}" + (f" ({tasks})" if tasks else "")
    return "; ".join(words(config) for config in OPTION_METHODS.values())


def settings_words(mode: str) -> str:
    settings = PREFIX_MODES[mode].task_settings.get("classify", {})
    return ", ".join(f"{name} {value}" for name, value in settings.items())


def default(cls, name: str) -> Any:
    """The default of a config field (for help texts: stated once, on the field)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


class OneLineParser(argparse.ArgumentParser):
    """A flag mistake is one line and the --help hint, not the whole usage (exit code 2)."""

    def error(self, message: str):
        distributed.report_failure(f"error: {message} ({self.prog} --help lists every flag)")  # once under torchrun
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="run_llama.py", description="minillama coursework tasks",
                      argument_default=argparse.SUPPRESS)
    p.add_argument("--option", type=str, required=True, choices=OPTIONS,
                   help="generate: continue a prompt; prompt: zero-shot; finetune: full model; "
                        "lora: LoRA adapters; prefix: prefix/prompt tuning, P-tuning v2; bottleneck: bottleneck "
                        "adapters (Houlsby, Pfeiffer); probe: only a head, on the frozen model's features; "
                        "mmlu: evaluate on MMLU")
    # model and run
    p.add_argument("--pretrained-model-path", type=str,
                   help=f"llama2.c .pt/.bin checkpoint or Llama 3.2 directory (default {default(RunConfig, 'model_path')})")
    p.add_argument("--tokenizer", type=str,
                   help="tokenizer.model (default: the one inside a Llama 3.2 directory, else tokenizer.model)")
    p.add_argument("--norm", type=str, choices=NORMS,
                   help="norm for stories checkpoints (default layernorm, the course's; rmsnorm reproduces llama2.c)")
    p.add_argument("--dtype", type=str, choices=list(DTYPES))
    p.add_argument("--use_sdpa", action="store_true", help="opt-in fast path: torch's fused attention")
    p.add_argument("--no_fast", dest="fast", action="store_false",
                   help="run the plain hand-written core, without minillama.fast's speed-ups (same results, slower)")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for training/eval (mixed precision)")
    p.add_argument("--seed", type=int, help=f"default {default(RunConfig, 'seed')}")
    # generation
    g = p.add_argument_group("generate")
    g.add_argument("--generated_sentence_low_temp_out", type=str, help=f"default {default(GenerateConfig, 'low_temp_out')}")
    g.add_argument("--generated_sentence_high_temp_out", type=str,
                   help="default generated-sentence-temp-<T>.txt, T the sampling temperature "
                        "(1 for the course's pair)")
    g.add_argument("--prompt_text", type=str, help="text to continue (default: the course's)")
    g.add_argument("--temperature", type=float, help="one temperature (>= 0) instead of the course's 0.0 and 1.0")
    g.add_argument("--epsilon", type=float, help="epsilon sampling threshold in [0, 1)")
    g.add_argument("--max_new_tokens", type=int, help=f"default {default(GenerateConfig, 'max_new_tokens')}")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the Llama 3 Instruct chat format")
    # classification data
    d = p.add_argument_group("classification data")
    d.add_argument("--train", type=str, help=f"default {DEFAULT_TRAIN}; its name (sst-train.txt: sst) names the "
                                                   "default outputs, else --dev's when nothing trains")
    d.add_argument("--dev", type=str, help=f"default {default(ClassifyConfig, 'dev')}")
    d.add_argument("--test", type=str, help=f"default {default(ClassifyConfig, 'test')}")
    d.add_argument("--label-names", type=str,
                   help="JSON list of label names (default: the ones saved with --load_adapter's adapter, else "
                        f"{DEFAULT_LABEL_NAMES})")
    d.add_argument("--dev_out", type=str, help="default: <dataset>-dev-<option>-output.txt")
    d.add_argument("--test_out", type=str, help="default: <dataset>-test-<option>-output.txt")
    d.add_argument("--max_sentence_len", type=int)
    # training
    t = p.add_argument_group("training")
    t.add_argument("--batch_size", type=int, help=f"default {default(TrainConfig, 'batch_size')}")
    t.add_argument("--epochs", type=int, help=f"default {default(TrainConfig, 'epochs')}")
    t.add_argument("--lr", type=float, help=f"learning rate (default: the method's; {lr_defaults()})")
    t.add_argument("--weight_decay", type=float, help=f"default {default(TrainConfig, 'weight_decay')}")
    t.add_argument("--hidden_dropout_prob", type=float, help=f"default {default(ClassifyConfig, 'hidden_dropout_prob')}")
    t.add_argument("--patience", type=int, help="early stopping: epochs without dev improvement")
    t.add_argument("--min_delta", type=float, help="early stopping: smallest improvement that counts")
    t.add_argument("--lr_schedule", type=str, choices=SCHEDULES,
                   help="after --warmup_steps (default: constant; --task e2e: linear decay, the paper's)")
    t.add_argument("--warmup_steps", type=int, help=f"linear warm-up steps (default {default(TrainConfig, 'warmup_steps')})")
    t.add_argument("--grad_accum", type=int, help="split each batch into N micro-batches (the same step, less memory)")
    t.add_argument("--max_grad_norm", type=float, help="clip the trainable parameters' global gradient norm (default off)")
    t.add_argument("--head_lr", type=float, help="learning rate of a new classification head (default: --lr)")
    t.add_argument("--checkpoint_dir", type=str, help="write a resumable checkpoint there after every epoch")
    t.add_argument("--save_every", type=int, help="... and every N optimisation steps")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint_dir's last whole checkpoint")
    t.add_argument("--log_jsonl", type=str, help="this run's per-epoch / eval records as JSON lines (see runlog.py)")
    t.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (if installed)")
    # lora
    lo = p.add_argument_group("lora")
    lo.add_argument("--lora_rank", type=int, help=f"default {default(LoraConfig, 'rank')}")
    lo.add_argument("--lora_alpha", type=float, help=f"default {default(LoraConfig, 'alpha')}")
    lo.add_argument("--lora_dropout", type=float, help=f"default {default(LoraConfig, 'dropout')}")
    lo.add_argument("--lora_targets", type=str, help="comma-separated projections: wq,wk,wv,wo,w1,w2,w3 "
                                                     f"(default {','.join(default(LoraConfig, 'targets'))})")
    # bottleneck adapters
    bn = p.add_argument_group("bottleneck")
    bn.add_argument("--bottleneck_config", type=str, choices=BOTTLENECK_CONFIGS,
                    help="houlsby: an adapter after the attention and after the feed-forward of every block; "
                         "pfeiffer: after the feed-forward only (AdapterHub's DoubleSeqBnConfig / SeqBnConfig; "
                         f"default {default(BottleneckConfig, 'config')})")
    bn.add_argument("--reduction_factor", type=int,
                    help=f"adapter width = model width / this (default {default(BottleneckConfig, 'reduction_factor')})")
    bn.add_argument("--export_adapterhub", type=str, metavar="DIR",
                    help="also write the bottleneck adapter (trained, or given by --load_adapter) in AdapterHub's "
                         "saved-adapter layout, which adapters' load_adapter reads on a transformers "
                         "LlamaForCausalLM (a classification head stays behind)")
    bn.add_argument("--non_linearity", type=str, choices=list(NON_LINEARITIES),
                    help="between the down- and up-projection (default: the config's, "
                         + ", ".join(f"{c} {f}" for c, f in DEFAULT_NON_LINEARITY.items()) + ")")
    # probing: the frozen model, a trained head
    pr = p.add_argument_group("probe")
    pr.add_argument("--probe_head", type=str, choices=PROBE_HEADS,
                    help="linear: one linear layer; mlp: two (hidden width = model width, GELU) "
                         f"(default {default(ProbeConfig, 'head')})")
    # prefix family
    x = p.add_argument_group("prefix")
    x.add_argument("--prefix_mode", type=str, choices=list(PREFIX_MODES),
                   help=f"prefix (default; classification: {PREFIX_MODE} with {settings_words(PREFIX_MODE)}, "
                        f"read by the {PREFIX_HEAD} head): per-layer "
                        "keys/values via an MLP (Li & Liang); prompt: input "
                        "embeddings (Lester et al.); ptuning2: per-layer keys/values trained directly; "
                        "adapter: LLaMA-Adapter, a zero-gated prompt read in a separate softmax (Zhang et al.)")
    x.add_argument("--prefix_length", type=int, help=f"virtual tokens (default {default(PrefixConfig, 'length')}; "
                                                      f"classification's {PREFIX_MODE}: "
                                                      f"{PREFIX_MODES[PREFIX_MODE].task_settings['classify']['length']})")
    x.add_argument("--prefix_hidden", type=int,
                   help=f"width of the reparameterization MLP (default {default(PrefixTuningConfig, 'hidden')})")
    x.add_argument("--no_reparam", action="store_true",
                   help="mode prefix: train the keys/values directly (that is P-tuning v2's model)")
    x.add_argument("--prefix_init", type=str, choices=INITS,
                   help=f"where the prefix starts (default {default(PrefixConfig, 'init')}; "
                        f"classification's {PREFIX_MODE}: "
                        f"{PREFIX_MODES[PREFIX_MODE].task_settings['classify']['init']})")
    x.add_argument("--prefix_init_text", type=str, help="text whose tokens start the prefix")
    x.add_argument("--adapter_layers", type=int,
                   help="--prefix_mode adapter: how many top layers get a prompt (default: all but the first two)")
    x.add_argument("--adapter_gate", type=str, choices=GATES,
                   help="--prefix_mode adapter: scalar (default): one gate per layer, as PEFT; "
                        "tanh: one tanh(gate) per head, as the paper (PEFT cannot load it)")
    x.add_argument("--prefix_head", type=str, choices=HEADS,
                   help="cls: linear head on the last token; mean (default): linear head on the mean of all "
                        "tokens' final hidden states; verbalizer: LM head scores the label names after the course "
                        "prompt (no new head: the whole task in the prefix)")
    x.add_argument("--save_adapter", type=str,
                   help="write the trained adapter to PATH.safetensors + PATH.json "
                        "(prefix default: <dataset>-prefix-adapter; --task mmlu: mmlu-<option>-adapter)")
    x.add_argument("--export_peft", type=str, metavar="DIR",
                   help="also write the adapter (trained, or given by --load_adapter) as a Hugging Face PEFT "
                        "directory: lora, prefix, ptuning2, prompt, adapter (a classification head stays behind)")
    x.add_argument("--load_adapter", type=str, nargs="+", metavar="PATH",
                   help="evaluate saved adapter(s) without training; with two, see --interpolate; a PATH "
                        "may also be a PEFT adapter directory (adapter_config.json) trained on this base")
    x.add_argument("--interpolate", type=float, metavar="ALPHA", help="with two --load_adapter: alpha*A + (1-alpha)*B")
    x.add_argument("--adapter_names", type=lambda text: [t.strip() for t in text.split(",")], metavar="a,b,...",
                   help="with several --load_adapter (deep prefixes): evaluate each on its own files in one pass, "
                        "batches mixing them; --dev, --test (and --label-names, --dev_out, --test_out) then take "
                        "one comma-separated entry per adapter")
    # mmlu
    m = p.add_argument_group("mmlu")
    m.add_argument("--task", type=str, choices=TASKS,
                   help="what a training option trains on: the course's classification data (default), MMLU "
                        "(--option prefix or bottleneck) or E2E pairs")
    m.add_argument("--mmlu_dir", type=str, help=f"MMLU data with dev/ val/ test/ CSVs (default {default(MMLUSettings, 'mmlu_dir')})")
    m.add_argument("--subjects", type=str, help="comma-separated MMLU subjects (default: all 57)")
    m.add_argument("--limit", type=int, help="at most this many questions per subject")
    m.add_argument("--k_shot", type=int, help="MMLU: 0..5 exemplars from dev before each question; --option prompt: "
                                              "K labelled --train examples (balanced, chosen with --seed) before "
                                              "each sentence (default 0)")
    m.add_argument("--temperatures", type=str, help="--mmlu_mode generate: also sample the answers at each of "
                                                     "these temperatures (e.g. 0,0.7,1.0): accuracy, refusal rate, "
                                                     "consistency and answer entropy per temperature")
    m.add_argument("--samples", type=int, help=f"answers sampled per question at each temperature "
                                               f"(default {default(MMLUSettings, 'samples')})")
    m.add_argument("--mmlu_split", type=str, choices=SPLITS)
    m.add_argument("--mmlu_mode", type=str, choices=MMLU_MODES,
                   help="logits: compare the letter tokens' logits; generate: parse a greedy reply (refusals)")
    m.add_argument("--mmlu_new_tokens", type=int, help=f"tokens generated in generate mode "
                                                       f"(default {default(MMLUSettings, 'new_tokens')})")
    m.add_argument("--mmlu_holdout", type=float, help="prefix --task mmlu: share of val (per subject) held out "
                                                      f"for early stopping (default {default(MMLUPrefixConfig, 'holdout')})")
    m.add_argument("--mmlu_out", type=str, help="report: .json, or .jsonl with one line per question")
    # conditional generation (--task e2e)
    e = p.add_argument_group("e2e (conditional generation: --option finetune|lora|prefix --task e2e)")
    e.add_argument("--source_column", type=str, help=f"CSV column of the source (default {default(E2EConfig, 'source_column')})")
    e.add_argument("--target_column", type=str, help=f"CSV column of the target (default {default(E2EConfig, 'target_column')})")
    e.add_argument("--max_train_rows", type=int, help="train on the first N rows only")
    e.add_argument("--beam_size", type=int, help=f"beams (1 = greedy; default {default(E2EConfig, 'beam_size')})")
    e.add_argument("--length_penalty", type=float,
                   help=f"beam hypotheses scored sum log p / length ** this (default {default(E2EConfig, 'length_penalty')})")
    e.add_argument("--scores_out", type=str, help="JSON report of the five metrics (default <test_out>-scores.json)")
    e.add_argument("--no_java", action="store_true", help="score BLEU and NIST only (METEOR, ROUGE_L, CIDEr need Java)")
    return p


# -- which flags each option and task reads -----------------------------------------------------
@dataclass(frozen=True)
class Asked:
    """What a command line asks for, as far as it decides which flags are read."""
    option: str
    task: str                   # classify | mmlu | e2e (--option mmlu: mmlu; --option generate: generate)
    loads: bool                 # --load_adapter: evaluates saved adapters, nothing trains
    mixed: bool                 # --adapter_names: several adapters, each on its own files
    mode: Optional[str] = None  # the prefix mode that trains (--option prefix only)
    mode_given: bool = False    # --prefix_mode given (else the task's default)

    @property
    def trains(self) -> bool:
        return self.option in TRAINING_OPTIONS and not self.loads


TRAINING_OPTIONS = ("finetune", "lora", "prefix", "bottleneck", "probe")
GENERATOR_OPTIONS = ("finetune", "lora", "prefix", "bottleneck")  # --task e2e (a probe trains a classification head)
CLASSIFY_OPTIONS = ("prompt",) + TRAINING_OPTIONS
EVALUATING_OPTIONS = CLASSIFY_OPTIONS + ("mmlu",)  # every option but generate


@dataclass(frozen=True)
class FlagGroup:
    """Flags (argparse dest -> the config field each sets; --prefix_mode and --no_reparam choose
    the method's config class instead) and the runs that read them: every requirement given
    must hold (None: any)."""
    flags: Dict[str, str]
    options: Optional[Tuple[str, ...]] = None
    tasks: Optional[Tuple[str, ...]] = None
    mixed: Optional[bool] = None
    trains: Optional[bool] = None
    modes: Optional[Tuple[str, ...]] = None
    who: Optional[str] = None  # the readers in words, where the requirements above say it badly

    def first_unmet(self, asked: Asked) -> Optional[int]:
        """Index of the first requirement `asked` misses (in the order above), None if it reads them."""
        checks = (self.options is None or asked.option in self.options,
                  self.tasks is None or asked.task in self.tasks,
                  self.mixed is None or asked.mixed == self.mixed,
                  self.trains is None or asked.trains == self.trains,
                  self.modes is None or asked.mode in self.modes)
        return next((i for i, ok in enumerate(checks) if not ok), None)

    def readers(self) -> str:
        """The runs that read these flags, in words."""
        if self.who:
            return self.who
        words = [f"--option {'|'.join(self.options)}" if self.options else "",
                 f"--task {'|'.join(self.tasks)}" if self.tasks else "",
                 f"--prefix_mode {'|'.join(self.modes)}" if self.modes else "",
                 "when training (no --load_adapter)" if self.trains else "",
                 "without --adapter_names" if self.mixed is False else ""]
        return " ".join(w for w in words if w) or "every command"


# THE table: which flags each option and task reads, and which config field each one sets.  The
# configs are built from these groups (task_config), and a flag given that no group of the run
# reads is refused (check_flags_read): a flag that would do nothing never passes silently.
FLAG_GROUPS: Dict[str, FlagGroup] = {
    "run": FlagGroup({"pretrained_model_path": "model_path", "tokenizer": "tokenizer_path", "norm": "norm",
                      "dtype": "dtype", "use_sdpa": "use_sdpa", "fast": "fast", "seed": "seed", "use_gpu": "device",
                      "option": "option", "task": "task"}),
    "bf16": FlagGroup({"bf16": "bf16"}, options=EVALUATING_OPTIONS),
    "generate": FlagGroup({"generated_sentence_low_temp_out": "low_temp_out",
                           "generated_sentence_high_temp_out": "high_temp_out", "prompt_text": "prompt_text",
                           "temperature": "temperature", "epsilon": "epsilon", "max_new_tokens": "max_new_tokens",
                           "chat": "chat"}, options=("generate",)),
    "batch": FlagGroup({"batch_size": "batch_size"}, options=EVALUATING_OPTIONS),
    "adapters": FlagGroup({"load_adapter": "load_adapter", "interpolate": "interpolate"}, options=EVALUATING_OPTIONS),
    "log": FlagGroup({"log_jsonl": "log_jsonl", "wandb": "wandb"}, options=EVALUATING_OPTIONS, mixed=False),
    "training": FlagGroup({"epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "patience": "patience",
                           "min_delta": "min_delta", "lr_schedule": "lr_schedule", "warmup_steps": "warmup_steps",
                           "grad_accum": "grad_accum", "max_grad_norm": "max_grad_norm",
                           "checkpoint_dir": "checkpoint_dir", "save_every": "save_every", "resume": "resume"},
                          options=TRAINING_OPTIONS, trains=True),
    "save": FlagGroup({"save_adapter": "save_adapter"}, options=TRAINING_OPTIONS, tasks=("classify", "mmlu"),
                      trains=True),
    "export": FlagGroup({"export_peft": "export_peft"}, options=CLASSIFY_OPTIONS, tasks=("classify", "mmlu", "e2e")),
    "export_adapterhub": FlagGroup({"export_adapterhub": "export_adapterhub"}, options=CLASSIFY_OPTIONS,
                                   tasks=("classify", "e2e")),
    "lora": FlagGroup({"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
                       "lora_targets": "targets"}, options=("lora",), trains=True),
    "bottleneck": FlagGroup({"bottleneck_config": "config", "reduction_factor": "reduction_factor",
                             "non_linearity": "non_linearity"}, options=("bottleneck",), trains=True),
    "probe": FlagGroup({"probe_head": "head"}, options=("probe",), trains=True),
    "prefix": FlagGroup({"prefix_mode": "mode", "prefix_length": "length"}, options=("prefix",), trains=True),
    "prefix_init": FlagGroup({"prefix_init": "init", "prefix_init_text": "init_text"}, options=("prefix",),
                             trains=True, modes=("prefix", "ptuning2", "prompt")),
    "prefix_mlp": FlagGroup({"prefix_hidden": "hidden", "no_reparam": "no_reparam"}, options=("prefix",),
                            trains=True, modes=("prefix",)),
    "llama_adapter": FlagGroup({"adapter_layers": "layers", "adapter_gate": "gate"}, options=("prefix",),
                               trains=True, modes=("adapter",)),
    # classification
    "classify": FlagGroup({"dev": "dev", "test": "test", "label_names": "label_names", "dev_out": "dev_out",
                           "test_out": "test_out", "max_sentence_len": "max_sentence_len"},
                          options=CLASSIFY_OPTIONS, tasks=("classify",)),
    "classify_train": FlagGroup({"train": "train"}, options=CLASSIFY_OPTIONS, tasks=("classify",), mixed=False),
    "head": FlagGroup({"prefix_head": "head", "hidden_dropout_prob": "hidden_dropout_prob", "head_lr": "head_lr"},
                      options=TRAINING_OPTIONS, tasks=("classify",), trains=True),
    "mixed": FlagGroup({"adapter_names": "adapter_names"}, options=CLASSIFY_OPTIONS, tasks=("classify",)),
    "k_shot": FlagGroup({"k_shot": "k_shot"}, options=("prompt",), tasks=("classify",), who="--option prompt"),
    # MMLU
    "mmlu": FlagGroup({"mmlu_dir": "mmlu_dir", "subjects": "subjects", "limit": "limit", "k_shot": "k_shot",
                       "mmlu_mode": "mode", "mmlu_new_tokens": "new_tokens", "chat": "chat", "mmlu_out": "out",
                       "temperatures": "temperatures", "samples": "samples"},
                      tasks=("mmlu",), who="--option mmlu and --option prefix|bottleneck --task mmlu"),
    "mmlu_eval": FlagGroup({"mmlu_split": "split"}, options=("mmlu",)),
    "mmlu_prefix": FlagGroup({"mmlu_holdout": "holdout"}, options=("prefix", "bottleneck"), tasks=("mmlu",),
                             trains=True),
    # conditional generation
    "e2e": FlagGroup({"dev": "dev", "test": "test", "source_column": "source_column",
                      "target_column": "target_column", "beam_size": "beam_size", "length_penalty": "length_penalty",
                      "max_new_tokens": "max_new_tokens", "test_out": "test_out", "dev_out": "dev_out",
                      "scores_out": "scores_out", "no_java": "no_java"}, tasks=("e2e",)),
    "e2e_train": FlagGroup({"train": "train", "max_train_rows": "max_train_rows"}, tasks=("e2e",), trains=True),
    "e2e_save": FlagGroup({"save_adapter": "save_adapter"}, options=("lora", "prefix", "bottleneck"), tasks=("e2e",),
                          trains=True),
}


def flags(*groups: str) -> Dict[str, str]:
    """{dest: field} of the groups named (one config's flags)."""
    return {dest: name for g in groups for dest, name in FLAG_GROUPS[g].flags.items()}


def given(ns: Dict[str, Any], names: Dict[str, str]) -> Dict[str, Any]:
    """{field: value} for the flags (dest names) that were given; the rest keep their defaults."""
    return {name: ns[flag] for flag, name in names.items() if flag in ns}


def prefix_mode(ns: Dict[str, Any], task: str) -> str:
    """The prefix mode a run trains: --prefix_mode; else prefix tuning when --prefix_hidden names
    its MLP; else the task's default (classification: PREFIX_MODE; the others: prefix tuning)."""
    if "prefix_mode" in ns:
        return ns["prefix_mode"]
    return PREFIX_MODE if task == "classify" and "prefix_hidden" not in ns else "prefix"


def asked(ns: Dict[str, Any]) -> Asked:
    option = ns["option"]
    task = {"mmlu": "mmlu", "generate": "generate"}.get(option, ns.get("task", "classify"))
    loads = bool(ns.get("load_adapter"))
    mode = prefix_mode(ns, task) if option == "prefix" and not loads else None
    return Asked(option, task, loads, "adapter_names" in ns, mode, "prefix_mode" in ns)


def refusal_context(a: Asked, unmet: int) -> str:
    """The part of the command that leaves a flag unread, for requirement `unmet` (FlagGroup's order)."""
    run = f"--option {a.option}" + (f" --task {a.task}" if a.task not in ("classify", a.option) else "")
    if unmet == 2:
        return "--adapter_names (each adapter evaluated on its own files)"
    if unmet == 3:
        return "--load_adapter (it evaluates saved adapters; nothing trains)" if a.loads else run
    if unmet == 4:
        return f"--prefix_mode {a.mode}" + ("" if a.mode_given else f" (the default of --option {a.option} "
                                                                       f"--task {a.task})")
    return run


def check_flags_read(ns: Dict[str, Any], spelling: Dict[str, str]):
    """Refuse, in one line, the first flag given that no group of this run reads.  `spelling`:
    dest -> the flag as typed (--label-names)."""
    a = asked(ns)
    for dest in ns:
        groups = [g for g in FLAG_GROUPS.values() if dest in g.flags]
        unmet = [g.first_unmet(a) for g in groups]
        if not groups or None in unmet:
            continue
        closest = max(unmet)  # the group this run comes nearest to reading
        readers = "; ".join(dict.fromkeys(g.readers() for g in groups))
        raise MinillamaError(f"{spelling.get(dest, '--' + dest)} does nothing with {refusal_context(a, closest)}: "
                             f"drop it (it is read by {readers})")


def flag_spelling(parser: argparse.ArgumentParser) -> Dict[str, str]:
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


# -- flags -> configs ----------------------------------------------------------------------------
def choose_device(use_gpu: bool) -> str:
    if use_gpu:
        if torch.cuda.is_available():
            return "cuda"
        print("--use_gpu: no CUDA device available, running on CPU", file=sys.stderr)
    return "cpu"


def run_config(ns: Dict[str, Any]) -> RunConfig:
    names = {k: v for k, v in flags("run", "bf16").items() if k not in ("use_gpu", "option", "task")}
    return RunConfig(device=choose_device(ns.get("use_gpu", False)), **given(ns, names))


def method_config(option: str, ns: Dict[str, Any], task: str = "classify"):
    """The adaptation method of a training option, from its flags (None: --option prompt): the
    method's settings for `task` (its config's task_settings), each flag given winning field by
    field.  (Which prefix flags each mode reads is FLAG_GROUPS'.)"""
    if option == "finetune":
        return FullConfig()
    if option == "lora":
        return LoraConfig(**given(ns, flags("lora")))
    if option == "bottleneck":
        return BottleneckConfig(**given(ns, flags("bottleneck")))
    if option == "probe":
        return ProbeConfig(**given(ns, flags("probe")))
    if option != "prefix":
        return None
    mode = prefix_mode(ns, task)
    settings = PREFIX_MODES[mode].task_settings.get(task, {})  # the named mode's, --no_reparam or not
    if mode == "prefix" and ns.get("no_reparam"):
        mode = "ptuning2"  # the same model: deep keys/values trained directly
        print("--no_reparam: prefix keys/values trained directly, which is --prefix_mode ptuning2")
    fields = {"prefix_length": "length"}
    fields.update(flags("llama_adapter") if mode == "adapter" else flags("prefix_init"))
    if mode == "prefix":
        fields["prefix_hidden"] = "hidden"
    return PREFIX_MODES[mode](**{**settings, **given(ns, fields)})


def training_config(ns: Dict[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """The training flags given, over `base` (a task's default TrainConfig, else TrainConfig())."""
    return dataclasses.replace(base or TrainConfig(), **given(ns, {**flags("training", "batch"),
                                                                   "head_lr": "head_lr"}))


def mmlu_settings(ns: Dict[str, Any]) -> MMLUSettings:
    return MMLUSettings(**given(ns, {k: v for k, v in flags("mmlu", "batch").items() if k != "mmlu_out"}))


def task_config(ns: Dict[str, Any], spelling: Optional[Dict[str, str]] = None) -> Tuple[str, Any]:
    """(task module name, its config) for the option and --task given; a flag the run would not
    read is refused first (FLAG_GROUPS)."""
    option, task = ns["option"], ns.get("task", "classify")
    if task == "mmlu" and option not in ("prefix", "bottleneck", "mmlu"):
        raise MinillamaError(f"--task mmlu trains a prefix or bottleneck adapters on MMLU: use --option prefix or "
                             f"bottleneck (or --option mmlu to evaluate), not --option {option}")
    if task == "e2e" and option not in GENERATOR_OPTIONS:
        raise MinillamaError(f"--task e2e trains a generator: use --option finetune, lora, prefix or bottleneck, "
                             f"not --option {option}")
    check_flags_read(ns, spelling or flag_spelling(build_parser()))
    if option == "generate":
        return "generate", GenerateConfig(**given(ns, flags("generate")))
    common = flags("adapters", "log")
    if option == "mmlu":
        return "mmlu_eval", MMLUEvalConfig(settings=mmlu_settings(ns), **given(ns, {
            **flags("mmlu_eval"), "mmlu_out": "out", **common}))
    # with --load_adapter, the adapter's own method is read from its file
    method = method_config(option, ns, task)
    if task == "mmlu":
        return "mmlu_prefix", MMLUPrefixConfig(settings=mmlu_settings(ns), option=option, method=method,
                                               training=training_config(ns), **given(ns, {
            **flags("mmlu_prefix", "save", "export"), "mmlu_out": "out", **common}))
    if task == "e2e":
        return "e2e", E2EConfig(option=option, method=method,
                                training=training_config(ns, default(E2EConfig, "training")),
                                **given(ns, {**flags("e2e", "e2e_train", "e2e_save", "export", "export_adapterhub"),
                                             **common}))
    return "classify", ClassifyConfig(option=option, method=method, training=training_config(ns), **given(ns, {
        **flags("classify", "classify_train", "save", "export", "export_adapterhub", "mixed", "k_shot"), **common,
        **{dest: name for dest, name in flags("head").items() if dest != "head_lr"}}))  # head_lr: TrainConfig's


def parse(argv: Optional[List[str]] = None, device: Optional[str] = None) -> Tuple[str, RunConfig, Any]:
    """(task module name, RunConfig, task config) from the command line; `device`: this
    rank's, when torchrun launched the process (distributed.init)."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    name, cfg = task_config(ns, flag_spelling(parser))
    if getattr(cfg, "trains", False):
        distributed.check_global_batch(cfg.training.batch_size)  # under torchrun, before anything loads
    run = run_config(ns)
    if device is not None:
        run = dataclasses.replace(run, device=device, progress=run.progress and distributed.is_main())
    return name, run, cfg


BUNDLED_MODEL = {"--pretrained-model-path": "assets/stories260K/stories260K.bin",
                 "--tokenizer": "assets/stories260K/tok512.model", "--norm": "rmsnorm"}


def bundled_model_command(argv: List[str]) -> Optional[str]:
    """With no --pretrained-model-path: the exact command that runs the same job on the
    bundled stories260K (its tokenizer and norm added unless given), for the error a
    missing stories42M.pt gives (offline, before setup.sh could download it)."""
    given_flags = {a.split("=")[0] for a in argv}
    if "--pretrained-model-path" in given_flags:
        return None
    extra = [x for flag, value in BUNDLED_MODEL.items() if flag not in given_flags for x in (flag, value)]
    return shlex.join([".venv/bin/python", "run_llama.py", *argv, *extra])


def use_gpu_asked(argv: Optional[List[str]]) -> bool:
    return "--use_gpu" in (sys.argv[1:] if argv is None else argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; under torchrun every rank runs it (distributed.py) and rank 0 alone
    prints and writes."""
    files.start_run()  # a full disk names what this run had written
    try:
        device = distributed.init(use_gpu_asked(argv))  # None unless launched by torchrun
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
        name, run_cfg, cfg = parse(argv, device)
        run_cfg = dataclasses.replace(run_cfg, bundled_command=bundled_model_command(
            sys.argv[1:] if argv is None else list(argv)))
        seed_everything(run_cfg.seed)
        with warnings.catch_warnings():
            warnings.showwarning = show_one_line  # minillama's warnings: one line, no file:line
            importlib.import_module(f"minillama.tasks.{name}").run(run_cfg, cfg)
    except MinillamaError as e:
        distributed.report_failure(f"error: {e}")  # under torchrun: once, and every rank exits 2
        return 2
    except OSError as e:  # a full disk outside files.atomic_write_group (which says it in its own line)
        if e.errno not in files.DISK_FULL:
            raise
        distributed.report_failure(f"error: {files.disk_full([e.filename or 'an output'], cleaned=False)}")
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


# -- python -m minillama.metrics ------------------------------------------------------------
def metrics_main(argv: Optional[List[str]] = None) -> int:
    """E2E scores of OUT against REFS, as the official measure_scores.py -p prints them.
    Exit codes: 0 every asked score printed; 2 a user mistake (bad file, or no Java for the
    Java metrics: BLEU and NIST are printed first)."""
    from .metrics import score_files
    p = argparse.ArgumentParser(prog="python -m minillama.metrics",
                                description="E2E NLG Challenge scores (BLEU, NIST, METEOR, ROUGE_L, CIDEr), "
                                            "equal to the official measure_scores.py -p")
    p.add_argument("references", metavar="REFS", help="references, one per line, a blank line between instances")
    p.add_argument("outputs", metavar="OUT", help="system outputs, one per line")
    p.add_argument("--no_java", action="store_true",
                   help="BLEU and NIST only (pure Python; METEOR, ROUGE_L and CIDEr need Java)")
    ns = p.parse_args(argv)
    try:
        print(score_files(ns.references, ns.outputs, java_metrics=not ns.no_java))
    except MinillamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
