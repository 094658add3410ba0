"""The command line of run_llama.py: flags, then dispatch to one task.

Flag names and defaults follow the course's run_llama.py; options add their
own groups.  Each option lives in minillama/tasks/<name>.py as `run(args)`.
User mistakes (MinillamaError) print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
from typing import List, Optional

import numpy as np
import torch

from .errors import MinillamaError

# option -> module in minillama.tasks providing run(args)
OPTIONS = {
    "generate": "generate",
    "prompt": "classify",
    "finetune": "classify",
    "lora": "classify",
    "prefix": "classify",
    "mmlu": "mmlu",
}
DEFAULT_CHECKPOINT = "stories42M.pt"      # where setup.sh puts it (the course's default)
from .loading import DEFAULT_LLAMA2_TOKENIZER as DEFAULT_TOKENIZER  # noqa: E402
DEFAULT_MMLU_DIR = os.path.join("data", "mmlu")
DEFAULT_LR = 2e-5         # the course's (full finetuning)
DEFAULT_PREFIX_LR = 1e-2  # a few thousand free parameters take far larger steps (bench/accuracy.py)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_llama.py", description="minillama coursework tasks")
    p.add_argument("--option", type=str, required=True, choices=sorted(OPTIONS),
                   help="generate: continue a prompt; prompt: zero-shot; finetune: full model; "
                        "lora: LoRA adapters; prefix: prefix/prompt tuning, P-tuning v2; mmlu: evaluate on MMLU")
    # model
    p.add_argument("--pretrained-model-path", type=str, default=DEFAULT_CHECKPOINT,
                   help="llama2.c .pt/.bin checkpoint or Llama 3.2 directory")
    p.add_argument("--tokenizer", type=str, default=None,
                   help=f"tokenizer.model (default: {DEFAULT_TOKENIZER}, or the one inside a Llama 3.2 directory)")
    p.add_argument("--norm", type=str, default=None, choices=["layernorm", "rmsnorm"],
                   help="norm for stories checkpoints (default layernorm, the course's; rmsnorm reproduces llama2.c)")
    p.add_argument("--dtype", type=str, default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--use_sdpa", action="store_true", help="opt-in fast path: torch's fused attention")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for training/eval (mixed precision)")
    p.add_argument("--seed", type=int, default=1337)
    # generation
    g = p.add_argument_group("generate")
    g.add_argument("--generated_sentence_low_temp_out", type=str, default="generated-sentence-temp-0.txt")
    g.add_argument("--generated_sentence_high_temp_out", type=str, default="generated-sentence-temp-1.txt")
    g.add_argument("--prompt_text", type=str, default=None, help="text to continue (default: the course's)")
    # checked by the task (sampling.check_sampling_args) so a bad value is one error line, not argparse usage
    g.add_argument("--temperature", type=float, default=None,
                   help="one temperature (>= 0) instead of the course's 0.0 and 1.0")
    g.add_argument("--epsilon", type=float, default=None, help="epsilon sampling threshold in [0, 1)")
    g.add_argument("--max_new_tokens", type=positive_int, default=75)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the Llama 3 Instruct chat format")
    # classification data
    d = p.add_argument_group("classification data")
    d.add_argument("--train", type=str, default="data/cfimdb-train.txt")
    d.add_argument("--dev", type=str, default="data/cfimdb-dev.txt")
    d.add_argument("--test", type=str, default="data/cfimdb-test.txt")
    d.add_argument("--label-names", type=str, default="data/cfimdb-label-mapping.json")
    d.add_argument("--dev_out", type=str, default=None, help="default: <dataset>-dev-<option>-output.txt")
    d.add_argument("--test_out", type=str, default=None, help="default: <dataset>-test-<option>-output.txt")
    d.add_argument("--max_sentence_len", type=positive_int, default=None)
    # training
    t = p.add_argument_group("training")
    t.add_argument("--batch_size", type=positive_int, default=8)
    t.add_argument("--epochs", type=positive_int, default=5)
    t.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {DEFAULT_LR}; --option prefix: {DEFAULT_PREFIX_LR})")
    t.add_argument("--weight_decay", type=float, default=0.0)
    t.add_argument("--hidden_dropout_prob", type=float, default=0.3)
    t.add_argument("--patience", type=int, default=None, help="early stopping: epochs without dev improvement")
    t.add_argument("--min_delta", type=float, default=0.0, help="early stopping: smallest improvement that counts")
    # lora
    l = p.add_argument_group("lora")
    l.add_argument("--lora_rank", type=int, default=4)
    l.add_argument("--lora_alpha", type=float, default=1.0)
    l.add_argument("--lora_dropout", type=float, default=0.0)
    l.add_argument("--lora_targets", type=str, default="wq,wv", help="comma-separated projections: wq,wk,wv,wo,w1,w2,w3")
    # prefix family (--option prefix; defaults from bench/accuracy.py on stories260K, see README)
    x = p.add_argument_group("prefix")
    x.add_argument("--prefix_mode", type=str, default="prefix", choices=["prefix", "prompt", "ptuning2"],
                   help="prefix: per-layer keys/values via an MLP (Li & Liang); prompt: input embeddings "
                        "(Lester et al.); ptuning2: per-layer keys/values trained directly")
    x.add_argument("--prefix_length", type=int, default=10, help="number of virtual tokens")
    x.add_argument("--prefix_hidden", type=int, default=512, help="width of the reparameterization MLP")
    x.add_argument("--no_reparam", action="store_true", help="mode prefix: train the keys/values directly")
    x.add_argument("--prefix_init", type=str, default="random", choices=["random", "vocab", "text"])
    x.add_argument("--prefix_init_text", type=str, default=None, help="text whose tokens start the prefix")
    x.add_argument("--prefix_head", type=str, default="cls", choices=["cls", "verbalizer"],
                   help="cls: linear head on the last token; verbalizer: LM head scores the label names "
                        "after the course prompt (no new head: the whole task in the prefix)")
    x.add_argument("--save_adapter", type=str, default=None,
                   help="write the trained prefix to PATH.safetensors + PATH.json "
                        "(classification default: <dataset>-prefix-adapter)")
    x.add_argument("--load_adapter", type=str, nargs="+", default=None, metavar="PATH",
                   help="evaluate saved adapter(s) without training; with two, see --interpolate")
    x.add_argument("--interpolate", type=float, default=None, metavar="ALPHA",
                   help="with two --load_adapter: evaluate alpha*A + (1-alpha)*B")
    # mmlu (--option mmlu; --option prefix --task mmlu)
    m = p.add_argument_group("mmlu")
    m.add_argument("--task", type=str, default="classify", choices=["classify", "mmlu"],
                   help="what --option prefix trains on: the course's classification data or MMLU")
    m.add_argument("--mmlu_dir", type=str, default=DEFAULT_MMLU_DIR, help="MMLU data with dev/ val/ test/ CSVs")
    m.add_argument("--subjects", type=str, default=None, help="comma-separated MMLU subjects (default: all 57)")
    m.add_argument("--limit", type=positive_int, default=None, help="at most this many questions per subject")
    m.add_argument("--k_shot", type=int, default=0, choices=range(0, 6), metavar="{0..5}",
                   help="exemplars from dev before each question")
    m.add_argument("--mmlu_split", type=str, default="test", choices=["test", "val", "dev"])
    m.add_argument("--mmlu_mode", type=str, default="logits", choices=["logits", "generate"],
                   help="logits: compare the letter tokens' logits; generate: parse a greedy reply (refusals)")
    m.add_argument("--mmlu_new_tokens", type=positive_int, default=10, help="tokens generated in generate mode")
    m.add_argument("--mmlu_holdout", type=float, default=0.2,
                   help="prefix --task mmlu: share of val (per subject) held out for early stopping")
    m.add_argument("--mmlu_out", type=str, default=None, help="report: .json, or .jsonl with one line per question")
    m.add_argument("--log_jsonl", type=str, default=None, help="append per-epoch / eval metrics here as JSON lines")
    m.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (if installed)")
    return p


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def choose_device(use_gpu: bool) -> torch.device:
    if use_gpu:
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("--use_gpu: no CUDA device available, running on CPU", file=sys.stderr)
    return torch.device("cpu")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The flags, with the per-option defaults filled in and args.device set."""
    args = build_parser().parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_PREFIX_LR if args.option == "prefix" else DEFAULT_LR
    args.device = choose_device(args.use_gpu)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    seed_everything(args.seed)
    try:
        task = importlib.import_module(f"minillama.tasks.{OPTIONS[args.option]}")
        task.run(args)
    except MinillamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
