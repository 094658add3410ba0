"""The efficiency table ("Prefix Tuning vs Other Methods"): every way of adapting one model to one
classification data set, side by side.  Each row is a run_llama.py command line (ROWS): minillama.cli
parses it and minillama.tasks.classify.run trains and evaluates it, as run_llama.py would.

  trained    finetune (full fine-tuning), probe (the frozen model, only the cls head trains:
             --option probe), lora (every projection), houlsby and pfeiffer (bottleneck adapters),
             prefix (prefix tuning through its MLP, folded after training), ptuning2 (P-tuning v2),
             prompt (prompt tuning), adapter (LLaMA-Adapter); every one reads its answer with the cls head
  prompted   zero_shot (--option prompt) and k_shot (--option prompt --k_shot K): nothing trains, the
             frozen model scores the label names after the course prompt (K labelled training examples
             before each sentence)

  trainable   parameters that train (adapter + the cls head) and their share of the frozen model, next
              to the share the literature quotes for the method (LITERATURE)
  on disk     bytes of the saved adapter with its head (finetune: the whole model as a .pt) vs the model's .pt
  s/step      seconds per training step at the course batch (real batches of the whole training split,
              each padded to its longest), median of --steps; on CPU the process's CPU time (use
              --threads 1: then it is the work done, steady on a machine other jobs share, where wall time
              is not), on CUDA wall time.  The prompted rows train nothing: no step
  peak MiB    peak memory of those steps: growth of the process's peak RSS (CPU) or of
              torch.cuda.max_memory_allocated over the size once the model is built; the prompted rows:
              of inference (no gradients) on the same batches
  wall        the row's task run, training and evaluation (wall time)
  dev acc     the task's dev accuracy (a training run keeps its best dev epoch) on --max_dev dev examples,
              after --epochs epochs on --max_train training examples

printed as a Markdown table and drawn as a PNG bar chart (--png: share against the literature's, bytes,
step time, memory, dev accuracy).  Each row runs in its own process, so its peak memory is its own.
Progress: a line as each row begins and ends (the time so far and an estimate of what remains), the
row's estimated training time once its step is timed, the task's tqdm bars; the total at the end.

    # the table of RESULTS.md: the genuine stories260K on the whole of SST-5, the course's settings (CPU)
    python bench/efficiency.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --dataset sst \\
        --max_train 0 --max_dev 0 --epochs 5 --seed 0 --train_batch 80 --max_sentence_len 512 \\
        --lr finetune=1e-3 --lr lora=1e-3 --steps 5 --threads 1 \\
        --methods finetune,lora,houlsby,pfeiffer,prefix,ptuning2,prompt,adapter,zero_shot,k_shot \\
        --png bench/results/efficiency-260K.png --json bench/results/efficiency-260K.json
    # a quick look (the defaults: 1000 training and 300 dev examples, 2 epochs at batch 8)
    python bench/efficiency.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --dataset sst --threads 1
    # stories42M's shape with random weights: sizes, step time and memory only (accuracy would mean nothing)
    python bench/efficiency.py --shape stories42M --tokenizer ../shared/assets/llama2/tokenizer.model \\
        --dataset sst --no_accuracy --steps 3 --png efficiency-42M.png
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from minillama import cli  # noqa: E402
from minillama.adapters.lora_config import TARGET_PARENTS  # noqa: E402
from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.data import load_split, read_examples, read_label_names  # noqa: E402
from minillama.errors import MinillamaError, show_one_line  # noqa: E402
from minillama.files import atomic_write_text  # noqa: E402
from minillama.formats import save_checkpoint  # noqa: E402
from minillama.heads import HeadClassifier, VerbalizerClassifier  # noqa: E402
from minillama.runconfig import seed_everything  # noqa: E402
from minillama.tasks import classify  # noqa: E402
from minillama.train import count_parameters, make_optimizer, train_step  # noqa: E402
from accuracy import data_dir, subsample  # noqa: E402  (bench/: fixed random subsets of the course data)
from train_step import memory_mark, peak_since  # noqa: E402
from progress import Runs, minutes  # noqa: E402

# Each row: its run_llama.py flags (the data, model and training flags are the bench's, added to
# every row) and whether it trains.  The prefix family is read by the cls head like every other
# trained row (its own default, --prefix_head mean, would make the head one more difference).
ROWS = {
    "finetune": ("--option finetune", True),
    "probe": ("--option probe", True),
    "lora": ("--option lora", True),
    "houlsby": ("--option bottleneck --bottleneck_config houlsby", True),
    "pfeiffer": ("--option bottleneck --bottleneck_config pfeiffer", True),
    "prefix": ("--option prefix --prefix_mode prefix --prefix_head cls", True),
    "ptuning2": ("--option prefix --prefix_mode ptuning2 --prefix_head cls", True),
    "prompt": ("--option prefix --prefix_mode prompt --prefix_head cls", True),
    "adapter": ("--option prefix --prefix_mode adapter --prefix_head cls", True),
    "zero_shot": ("--option prompt", False),
    "k_shot": ("--option prompt --k_shot {k_shot}", False),
}
# The share of the model the method's paper (or the texts that quote it) gives: (words, low %, high %)
# for the chart; None: no figure quoted.  Sources:
#   finetune   every weight trains (Houlsby et al. 2019: "fine-tuning trains 100% of the parameters")
#   lora       ~0.5 % is the commonly quoted figure; Hu et al. 2021 themselves: 0.01 % on GPT-3 175B
#              ("10,000 times" fewer), 0.1-0.3 % on GPT-2 medium and RoBERTa
#   houlsby,   ~1 %, the commonly quoted figure (a width-48 adapter, reduction 16, is 0.8 % / 1.6 % of
#   pfeiffer   BERT-base in the Pfeiffer / Houlsby placement); Houlsby et al. 2019 quote 3.6 % on GLUE
#   prefix     0.1 % (Li & Liang 2021, GPT-2 on table-to-text)
#   ptuning2   0.1-3 % (Liu et al. 2022)
#   prompt     ~0.01 % (Lester et al. 2021: under 0.01 % for models over a billion parameters)
#   adapter    1.2M parameters on LLaMA 7B, 0.02 % (Zhang et al. 2023)
#   probe, zero_shot, k_shot: none quoted (the prompted rows train nothing)
LITERATURE = {"finetune": ("100 %", 100, 100), "lora": ("~0.5 %", 0.5, 0.5), "houlsby": ("~1 %", 1, 1),
              "pfeiffer": ("~1 %", 1, 1), "prefix": ("~0.1 %", 0.1, 0.1), "ptuning2": ("0.1-3 %", 0.1, 3),
              "prompt": ("~0.01 %", 0.01, 0.01), "adapter": ("~0.02 %", 0.02, 0.02)}
COURSE_BATCH = {"sst": 80, "cfimdb": 10}  # the course's batch sizes (finetune SST, LoRA CFIMDB)
SHAPES = {"stories42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024)}


def title(row: str, task, backbone) -> str:
    """The row's method and its main settings, in words (from the configs the run uses)."""
    m = getattr(backbone, "cfg", task.method)  # the backbone's: resolved (LLaMA-Adapter's layers)
    if row == "lora":
        targets = "all projections" if set(m.targets) == set(TARGET_PARENTS) else "+".join(m.targets)
        return f"LoRA (r {m.rank}, {targets})"
    if row in ("houlsby", "pfeiffer"):
        return f"Bottleneck adapters ({m.config.capitalize()}, dim / {m.reduction_factor})"
    words = {"finetune": "Full fine-tuning", "probe": "Probe (frozen model, cls head only)",
             "zero_shot": "Zero-shot prompting", "k_shot": f"{task.k_shot}-shot prompting"}
    if row in words:
        return words[row]
    length = getattr(m, "length", None)
    return {"prefix": f"Prefix tuning ({length} tokens, MLP, folded)", "ptuning2": f"P-tuning v2 ({length} tokens)",
            "prompt": f"Prompt tuning ({length} tokens)",
            "adapter": f"LLaMA-Adapter ({length} vectors, top {getattr(m, 'layers', '?')} layers)"}.get(row, row)


def sizes(clf) -> dict:
    """Trainable parameters (adapter and head apart) and the frozen model's, of a classifier."""
    trainable, total = count_parameters(clf)
    head = sum(p.numel() for p in clf.head.parameters() if p.requires_grad) if isinstance(clf, HeadClassifier) else 0
    backbone = clf.backbone
    base = backbone.base_parameters if hasattr(backbone, "base_parameters") else backbone.num_parameters()
    return dict(trainable=trainable, adapter_trainable=trainable - head, base=base, total=total)


# -- one row, in its own process ---------------------------------------------------------------------
def measure(row: str, argv: list, args) -> dict:
    """Sizes, step time (or the inference of a prompted row) and peak memory, then the task run."""
    name, run_cfg, task = cli.parse(argv)
    seed_everything(run_cfg.seed)
    device = torch.device(run_cfg.device)
    model, tok = run_cfg.load()
    out = dict(method=row, argv=argv, trains=task.trains)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(model, os.path.join(tmp, "model.pt"))
        out["model_bytes"] = os.path.getsize(os.path.join(tmp, "model.pt"))
    names = read_label_names(task.label_names)
    backbone, _ = classify.build_backbone(task, model, tok)
    clf = classify.build_classifier(task, backbone, tok, names, None).to(device)
    out.update(sizes(clf), title=title(row, task, backbone))
    # the task's inputs (classify.run's): the prompt and its examples for the verbalizer, cut to the context
    suffix = classify.course_prompt(names) if isinstance(clf, VerbalizerClassifier) else None
    shots = classify.demonstrations(read_examples(task.train_path, len(names)), names, task.k_shot, run_cfg.seed) \
        if task.k_shot else ""
    max_len = classify.context_budget(backbone, tok, clf, suffix, task.max_sentence_len, shots, task.k_shot)
    split = load_split(args.timing_train, tok, len(names), max_len, suffix, shots)
    batch = args.batch or COURSE_BATCH[args.dataset]
    batches = list(split.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(0)))
    optimizer = make_optimizer(clf, task.training) if task.trains else None
    clf.train(task.trains)
    base = memory_mark(device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds, widths = [], []
    what = "timed training steps" if task.trains else "inference (nothing trains)"
    for i in tqdm(range(args.steps + 1), desc=f"{row}: {what}", file=sys.stderr):  # step 0 warms up
        b = batches[i % len(batches)]
        start = clock()
        if task.trains:
            train_step(clf, optimizer, b, device)
        else:
            with torch.no_grad():
                clf(b.input_ids.to(device), b.attention_mask.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            seconds.append(clock() - start)
            widths.append(int(b.attention_mask.shape[1]))
    out.update(step_s=statistics.median(seconds) if task.trains else None, batch=batch,
               padded_tokens=statistics.median(widths), peak_mib=peak_since(device, base) / 2**20,
               lr=task.training.lr if task.trains else None)
    if task.trains:
        n = len(read_examples(task.train_path, len(names)))
        steps = math.ceil(n / task.training.batch_size) * task.training.epochs
        print(f"{row}: {out['step_s']:.2f} s a step of {batch} ({'wall' if device.type == 'cuda' else 'CPU'} time): "
              f"training {n} examples at batch {task.training.batch_size} for {task.training.epochs} epoch(s), "
              f"{steps} steps, about {minutes(steps * out['step_s'] * task.training.batch_size / batch)}",
              file=sys.stderr, flush=True)
    del clf, backbone, model, optimizer, batches, split
    if task.trains or not args.no_accuracy:
        out.update(run_task(argv, task, args))
    if not task.trains:
        out["disk_bytes"] = 0
    return out


def run_task(argv: list, task, args) -> dict:
    """The row's run_llama.py command through the task code, its prints on stderr: dev accuracy
    (each epoch's from the run log), the saved adapter's bytes, the wall time."""
    name, run_cfg, task = cli.parse(argv)  # fresh configs, as the command line gives them
    seed_everything(run_cfg.seed)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.showwarning = show_one_line
        results = classify.run(run_cfg, task)
    out = {"wall_s": time.perf_counter() - start}
    if not args.no_accuracy:
        out["dev_acc"] = results["dev"]
        with open(task.log_jsonl, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        out["dev_per_epoch"] = [r["dev_acc"] for r in records if r["event"] == "epoch"]
    if task.option == "finetune":
        out["disk_bytes"] = None  # filled in below: nothing smaller to save than the whole model
    elif task.trains:
        out["disk_bytes"] = sum(os.path.getsize(task.save_adapter + s) for s in (".safetensors", ".json"))
    return out


# -- the parent: each row's command line, one process per row, then the table and the chart ------------
def row_argv(row: str, files: dict, work: str, args) -> list:
    """The row's whole run_llama.py command line: its own flags, then the bench's."""
    flags, trains = ROWS[row]
    argv = shlex.split(flags.format(k_shot=args.k_shot))
    argv += ["--pretrained-model-path", files["model"], "--tokenizer", args.tokenizer, "--norm", args.norm,
             "--seed", str(args.seed), "--train", files["train_acc"], "--dev", files["dev"], "--test", files["test"],
             "--label-names", files["labels"], "--dev_out", os.path.join(work, "dev-out.txt"),
             "--test_out", os.path.join(work, "test-out.txt"), "--batch_size", str(args.train_batch),
             "--log_jsonl", os.path.join(work, "log.jsonl")]
    if args.max_sentence_len:
        argv += ["--max_sentence_len", str(args.max_sentence_len)]
    if args.device == "cuda":
        argv += ["--use_gpu"]
    if row in args.lrs:  # a prompted row's is refused (check_rows), not dropped
        argv += ["--lr", args.lrs[row]]
    if trains:
        argv += ["--epochs", str(1 if args.no_accuracy else args.epochs)]
        if row != "finetune":
            argv += ["--save_adapter", os.path.join(work, "adapter")]
    return argv + shlex.split(args.row_flags.get(row, ""))


def check_rows(methods: list, argvs: dict):
    """Every row's command line as run_llama.py would take it, before any row runs: a row it
    refuses stops the bench now, in one line, not hours later (nothing is made up for it)."""
    unknown = [m for m in methods if m not in ROWS]
    if unknown:
        sys.exit(f"--methods: unknown row(s) {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    for row in methods:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                cli.parse(argvs[row])
        except (SystemExit, MinillamaError) as e:
            why = f": {e}" if isinstance(e, MinillamaError) else " (its line above)"
            sys.exit(f"row {row}: run_llama.py refuses `{shlex.join(argvs[row])}`{why}")


def settings(row: str, args) -> dict:
    """What a row's numbers depend on: --resume reuses a row of --json only when all of it matches."""
    keys = ("checkpoint", "shape", "tokenizer", "norm", "dataset", "data_dir", "batch", "train_batch", "steps",
            "max_train", "max_dev", "epochs", "seed", "max_sentence_len", "no_accuracy", "device", "threads")
    return {"flags": ROWS[row][0].format(k_shot=args.k_shot), "lr": args.lrs.get(row),
            "more_flags": args.row_flags.get(row), **{k: getattr(args, k) for k in keys}}


def earlier_rows(args) -> dict:
    """--resume: the rows of --json measured with this run's settings, by name."""
    if not args.resume:
        return {}
    if not args.json:
        sys.exit("--resume reuses the rows of --json FILE: give --json")
    if not os.path.exists(args.json):
        return {}
    with open(args.json, encoding="utf-8") as f:
        rows = json.load(f)
    return {r["method"]: r for r in rows if r["method"] in ROWS and r.get("settings") == settings(r["method"], args)}


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def share(r: dict) -> float:
    return 100 * r["trainable"] / r["base"]


def table(rows, args) -> str:
    what = args.checkpoint or f"{args.shape} shape, random weights"
    timed = next((r for r in rows if r["trains"]), rows[0])
    head = (f"{os.path.basename(what)} on {args.dataset.upper()} ({args.device}, {args.threads or torch.get_num_threads()} "
            f"thread(s)); step time at batch {timed['batch']} (median padded width {timed['padded_tokens']:.0f} tokens), "
            f"median of {args.steps} steps" + (" (CPU time)" if args.device == "cpu" else ""))
    if not args.no_accuracy:
        head += (f"; dev acc after {args.epochs} epoch(s) at batch {args.train_batch} on {args.n_train} training "
                 f"examples (the best dev epoch kept), {args.n_dev} dev examples, seed {args.seed}")
    acc = not args.no_accuracy
    lines = [head, "", "| method | trainable (adapter + head) | share of the model | literature | on disk | vs model | "
             "s/step | peak MiB | wall |" + (" dev acc |" if acc else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if acc else "")]
    for r in rows:
        lit = LITERATURE.get(r["method"], ("",))[0]
        disk = f"{human(r['disk_bytes'])} | {100 * r['disk_bytes'] / r['model_bytes']:.3f}%"
        step = f"{r['step_s']:.3f}" if r["step_s"] is not None else "-"
        peak = f"{r['peak_mib']:.0f}" + ("" if r["trains"] else " (inference)")
        wall = minutes(r["wall_s"]) if "wall_s" in r else "-"
        line = (f"| {r['title']} | {r['trainable']:,} ({r['adapter_trainable']:,} + "
                f"{r['trainable'] - r['adapter_trainable']:,}) | {share(r):.3f}% | {lit} | {disk} | {step} | {peak} | "
                f"{wall} |")
        lines.append(line + (f" {r['dev_acc']:.3f} |" if acc else ""))
    return "\n".join(lines)


def majority_share(path: str) -> float:
    """The dev set's most frequent label's share: what always answering it scores."""
    labels = [line.split("|||", 1)[0].strip() for line in open(path, encoding="utf-8") if line.strip()]
    return max(labels.count(l) for l in set(labels)) / len(labels)


def chart(rows, args, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r["method"] for r in rows]
    x = range(len(rows))
    colors = ["#888888" if r["method"] == "finetune" else "#4c72b0" if r["trains"] else "#dd8452" for r in rows]
    panels = [("trainable parameters, % of the model (log);\nblack: the literature's figure", [share(r) for r in rows], True),
              ("on disk, % of the model (log)", [100 * r["disk_bytes"] / r["model_bytes"] for r in rows], True),
              ("seconds per training step", [r["step_s"] or 0 for r in rows], False),
              ("peak memory, MiB\n(prompted rows: inference)", [r["peak_mib"] for r in rows], False)]
    if not args.no_accuracy:
        panels.append(("dev accuracy\n(dashed: the majority label)", [r["dev_acc"] for r in rows], False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 4.2))
    for i, (ax, (name, values, log)) in enumerate(zip(axes, panels)):
        ax.bar(x, values, color=colors)
        if log:
            ax.set_yscale("log")
        for j, (r, v) in enumerate(zip(rows, values)):
            if v <= 0:  # nothing trains (no bar on a log axis) or no training step: say it at the bottom
                ax.text(j, 0.02, "0" if log or r["trains"] else "none", ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform())
        if i == 0:
            for j, r in enumerate(rows):
                if r["method"] in LITERATURE:
                    _, lo, hi = LITERATURE[r["method"]]
                    ax.plot([j, j], [lo, hi], color="black", lw=2) if hi > lo else \
                        ax.plot([j], [lo], marker="_", color="black", markersize=14, mew=2)
        if name.startswith("dev accuracy"):
            ax.axhline(args.majority, color="black", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    fig.suptitle(os.path.basename(args.checkpoint or f"{args.shape} (random weights)") + f" on {args.dataset.upper()}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a real model (any format minillama loads)")
    p.add_argument("--shape", choices=list(SHAPES), help="instead: random weights of this shape")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--norm", default="rmsnorm", choices=["rmsnorm", "layernorm"])
    p.add_argument("--dataset", default="sst", choices=list(COURSE_BATCH))
    p.add_argument("--data_dir")
    p.add_argument("--methods", default=",".join(ROWS), help=f"rows, comma-separated (default all: {','.join(ROWS)})")
    p.add_argument("--k_shot", type=int, default=2, help="labelled examples before each sentence in the k_shot row")
    p.add_argument("--batch", type=int, help="step-time batch (default: the course's, 80 SST / 10 CFIMDB)")
    p.add_argument("--train_batch", type=int, default=8, help="batch of the task runs (training and evaluation)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--max_train", type=int, default=1000, help="training examples for dev accuracy (0: all)")
    p.add_argument("--max_dev", type=int, default=300, help="dev examples (0: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="run_llama.py --seed of every row")
    p.add_argument("--max_sentence_len", type=int, help="run_llama.py --max_sentence_len of every row")
    p.add_argument("--lr", action="append", default=[], metavar="ROW=VALUE", help="a trained row's learning rate")
    p.add_argument("--flags", action="append", default=[], metavar="ROW=FLAGS",
                   help="more run_llama.py flags for a row, e.g. ptuning2='--prefix_head mean'")
    p.add_argument("--no_accuracy", action="store_true", help="sizes, step time and memory only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--png", help="bar chart file")
    p.add_argument("--json", help="also write the rows as JSON (after each row)")
    p.add_argument("--resume", action="store_true", help="reuse the rows of --json measured with the same settings")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--argv", help=argparse.SUPPRESS)
    p.add_argument("--timing_train", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.lrs = dict(item.split("=", 1) for item in args.lr)
    args.row_flags = dict(item.split("=", 1) for item in args.flags)
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.checkpoint) == bool(args.shape):
        sys.exit("give --checkpoint (a real model) or --shape (random weights)")
    if args.child:
        print(json.dumps(measure(args.child, json.loads(args.argv), args)))
        return
    started = time.perf_counter()
    src = data_dir(args.data_dir)
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"labels": os.path.join(src, f"{args.dataset}-label-mapping.json"),
                              "train": os.path.join(src, f"{args.dataset}-train.txt"),
                              "train_acc": os.path.join(tmp, "train.txt"), "dev": os.path.join(tmp, "dev.txt"),
                              "test": os.path.join(tmp, "test.txt"), "model": args.checkpoint}
        # no accuracy: one epoch over a few examples, for the adapter's bytes
        args.n_train = subsample(files["train"], files["train_acc"], 16 if args.no_accuracy else args.max_train)
        args.n_dev = subsample(os.path.join(src, f"{args.dataset}-dev.txt"), files["dev"],
                               16 if args.no_accuracy else args.max_dev)
        subsample(os.path.join(src, f"{args.dataset}-test.txt"), files["test"], 8)  # the task predicts a test set
        args.majority = majority_share(files["dev"])
        if args.shape:  # the random-weight model as a checkpoint the rows' command lines name
            files["model"] = os.path.join(tmp, "random.pt")
            torch.manual_seed(0)
            save_checkpoint(Llama(LlamaConfig(**SHAPES[args.shape], norm=args.norm)), files["model"])
        argvs = {row: row_argv(row, files, os.path.join(tmp, row), args) for row in methods}
        check_rows(methods, argvs)
        earlier = earlier_rows(args)
        rows, runs = [], Runs(len([m for m in methods if m not in earlier]))
        for row in methods:
            if row in earlier:
                print(f"{row}: reused from {args.json} (measured with these settings)", file=sys.stderr)
                rows.append(earlier[row])
                continue
            os.makedirs(os.path.join(tmp, row))
            trains = ROWS[row][1]
            runs.begin(f"{row} (its own process: " + ("step time, memory" if trains else "inference memory") +
                       ("" if args.no_accuracy else f", {args.epochs} epoch(s) of training for dev acc" if trains
                        else ", dev acc") + ")")
            ours = ["--threads", str(args.threads)] if args.threads else []
            cmd = [sys.executable, os.path.abspath(__file__), "--child", row, "--argv", json.dumps(argvs[row]),
                   "--timing_train", files["train"], "--tokenizer", args.tokenizer, "--dataset", args.dataset,
                   "--steps", str(args.steps), "--checkpoint", files["model"], *ours] + \
                (["--batch", str(args.batch)] if args.batch else []) + (["--no_accuracy"] if args.no_accuracy else [])
            start = time.perf_counter()
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr: its progress, as it goes
            if done.returncode:
                sys.exit(f"row {row} failed (exit {done.returncode}; its error above): "
                         f"the table is not printed without it")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if rows[-1]["method"] == "finetune":
                rows[-1]["disk_bytes"] = rows[-1]["model_bytes"]
            rows[-1].update(settings=settings(row, args), row_s=time.perf_counter() - start)
            if args.json:  # after every row: a run stopped later keeps what it measured (--resume)
                atomic_write_text(args.json, json.dumps(rows, indent=1))
            runs.done(f"{row}: {minutes(rows[-1]['row_s'])}")
    print(table(rows, args))
    print(f"\n{len(rows)} rows in {minutes(time.perf_counter() - started)} (wall time)")
    if args.png:
        chart(rows, args, args.png)
        print(f"chart: {args.png}")


if __name__ == "__main__":
    main()
