"""The efficiency table ("Prefix Tuning vs Other Methods"): for one model and data set,
every adaptation method side by side:

    finetune, lora, prefix, ptuning2, prompt, adapter (LLaMA-Adapter), houlsby and pfeiffer (bottleneck adapters)

  trainable   parameters that train (adapter + the cls head), and their share of the model
  on disk     bytes of the saved adapter (finetune: the whole model as a .pt checkpoint) vs the model's
  s/step      seconds per training step at the course batch (real batches of the training split:
              sentences of the data set, each batch padded to its longest), median of --steps; on
              CPU the process's CPU time (use --threads 1: then it is the work done, steady on a
              machine other jobs share, where wall time is not), on CUDA wall time
  peak MiB    peak memory of those steps: growth of the process's peak RSS (CPU) or of
              torch.cuda.max_memory_allocated over the size once the model is built
  dev acc     after a short training (--max_train examples, --epochs, through the task code
              minillama.tasks.classify.run, as run_llama.py runs it), on --max_dev dev examples

printed as a Markdown table and drawn as a PNG bar chart (--png).  Each method runs in its
own process, so its peak memory is its own.  Every method uses the cls head, each its own
default learning rate unless --lr METHOD=VALUE.

    # the real stories260K on SST (CPU)
    python bench/efficiency.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --dataset sst \\
        --max_train 1000 --max_dev 300 --epochs 2 --steps 5 --png efficiency-260K.png
    # stories42M's shape with random weights: step time and memory only (accuracy would mean nothing)
    python bench/efficiency.py --shape stories42M --tokenizer ../shared/assets/llama2/tokenizer.model \\
        --dataset sst --no_accuracy --steps 3 --png efficiency-42M.png
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from minillama.adapters import FullConfig, attach, make_config, parameter_counts  # noqa: E402
from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.data import load_split, read_label_names  # noqa: E402
from minillama.formats import save_checkpoint  # noqa: E402
from minillama.heads import HeadClassifier  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.fast import speed_up  # noqa: E402
from minillama.runconfig import RunConfig, seed_everything  # noqa: E402
from minillama.tokenizer import load_tokenizer  # noqa: E402
from minillama.train import TrainConfig, count_parameters, make_optimizer, train_step  # noqa: E402
from accuracy import data_dir, subsample  # noqa: E402  (bench/: fixed random subsets of the course data)
from train_step import memory_mark, peak_since  # noqa: E402
from progress import Runs  # noqa: E402

METHODS = ("finetune", "lora", "prefix", "ptuning2", "prompt", "adapter", "houlsby", "pfeiffer")
# run_llama.py --option of each method (else prefix)
OPTION = {"finetune": "finetune", "lora": "lora", "houlsby": "bottleneck", "pfeiffer": "bottleneck"}
BOTTLENECK = {"houlsby": "houlsby", "pfeiffer": "pfeiffer"}  # --bottleneck_config of each bottleneck row
TITLES = {"finetune": "Full fine-tuning", "lora": "LoRA (r 4, all projections)", "prefix": "Prefix tuning (MLP, folded)",
          "ptuning2": "P-tuning v2", "prompt": "Prompt tuning", "adapter": "LLaMA-Adapter",
          "houlsby": "Bottleneck adapters (Houlsby, dim / 16)", "pfeiffer": "Bottleneck adapters (Pfeiffer, dim / 16)"}
COURSE_BATCH = {"sst": 80, "cfimdb": 10}  # the course's batch sizes (finetune SST, LoRA CFIMDB)
SHAPES = {"stories42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024)}


def method_config(method: str, lrs: dict):
    if method in BOTTLENECK:
        cfg = make_config("bottleneck", config=BOTTLENECK[method])
    else:
        cfg = FullConfig() if method == "finetune" else make_config(method)
    return cfg, lrs.get(method, type(cfg).default_lr)


def load_base(args):
    """(model, tokenizer): the checkpoint, or random weights of --shape."""
    tok = load_tokenizer(args.tokenizer)
    if args.checkpoint:
        from minillama.formats import load_model
        return load_model(args.checkpoint, norm=args.norm, device=args.device, fast=True), tok
    torch.manual_seed(0)
    return speed_up(Llama(LlamaConfig(**SHAPES[args.shape], norm=args.norm)).to(args.device)), tok


def measure(method: str, args) -> dict:
    """In a fresh process: sizes, step time, peak memory and (unless --no_accuracy) dev accuracy."""
    seed_everything(0)
    files = json.loads(args.files)
    device = torch.device(args.device)
    model, tok = load_base(args)
    names = read_label_names(files["labels"])
    cfg, lr = method_config(method, args.lrs)
    clf = HeadClassifier(attach(model, cfg, tok), model.config.dim, len(names), dropout=0.3).to(device)
    counts = parameter_counts(clf.backbone)
    trainable, total = count_parameters(clf)
    split = load_split(files["train"], tok, len(names), model.config.max_seq_len - 32)
    batch = args.batch or COURSE_BATCH[args.dataset]
    batches = list(split.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(0)))
    optimizer = make_optimizer(clf, TrainConfig(lr=lr, batch_size=batch))
    clf.train()
    base = memory_mark(device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds, tokens = [], []
    for i in range(args.steps + 1):  # step 0 warms up (optimizer state, gradients)
        b = batches[i % len(batches)]
        start = clock()
        train_step(clf, optimizer, b, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            seconds.append(clock() - start)
            tokens.append(int(b.attention_mask.shape[1]))
    peak = peak_since(device, base)
    out = dict(method=method, trainable=trainable, adapter_trainable=counts["trainable"], base=counts["base"],
               total=total, step_s=statistics.median(seconds), batch=batch, padded_tokens=statistics.median(tokens),
               peak_mib=peak / 2**20, lr=lr)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pt")
        save_checkpoint(load_base(args)[0], ckpt)
        out["model_bytes"] = os.path.getsize(ckpt)
        if method == "finetune":
            out["disk_bytes"] = out["model_bytes"]  # nothing smaller to save: the whole model
        if not args.no_accuracy or method != "finetune":
            out.update(train_and_evaluate(method, cfg, lr, files, tmp, args))
    return out


def train_and_evaluate(method, cfg, lr, files, tmp, args) -> dict:
    """The short training through the task code; returns dev accuracy and adapter bytes."""
    from minillama.tasks.classify import ClassifyConfig, run
    adapter = None if method == "finetune" else os.path.join(tmp, "adapter")
    epochs = 1 if args.no_accuracy else args.epochs
    task = ClassifyConfig(option=OPTION.get(method, "prefix"), method=cfg, head="cls", train=files["train_acc"],
                          dev=files["dev"], test=files["test"], label_names=files["labels"],
                          dev_out=os.path.join(tmp, "dev.txt"), test_out=os.path.join(tmp, "test.txt"),
                          save_adapter=adapter, training=TrainConfig(epochs=epochs, lr=lr, batch_size=args.train_batch))
    run_cfg = RunConfig(model_path=args.checkpoint or save_random(tmp, args), tokenizer_path=args.tokenizer,
                        norm=args.norm, device=args.device, seed=0, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        results = run(run_cfg, task)
    out = {"train_s": time.perf_counter() - start}
    if not args.no_accuracy:
        out["dev_acc"] = results["dev"]
    if adapter:
        out["disk_bytes"] = sum(os.path.getsize(adapter + s) for s in (".safetensors", ".json"))
    return out


def save_random(tmp, args) -> str:
    """--shape: the random-weight model as a checkpoint the task can load (for the adapter's bytes)."""
    path = os.path.join(tmp, "random.pt")
    save_checkpoint(load_base(args)[0], path)
    return path


# -- the parent: one process per method, then the table and the chart ------------------------------
def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def table(rows, args) -> str:
    what = args.checkpoint or f"{args.shape} shape, random weights"
    head = (f"{os.path.basename(what)} on {args.dataset.upper()} ({args.device}, {torch.get_num_threads()} threads); "
            f"step time at batch {rows[0]['batch']} (median padded width {rows[0]['padded_tokens']:.0f} tokens), "
            f"median of {args.steps} steps" + (" (CPU time)" if args.device == "cpu" else ""))
    if not args.no_accuracy:
        head += f"; dev acc after {args.epochs} epoch(s) on {args.n_train} training examples, {args.n_dev} dev"
    lines = [head, "", "| method | trainable (adapter + head) | share of the model | on disk | vs model | s/step | "
             "peak MiB" + (" | dev acc |" if not args.no_accuracy else " |"),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if not args.no_accuracy else "")]
    for r in rows:
        share = 100 * r["trainable"] / r["base"]
        line = (f"| {TITLES[r['method']]} | {r['trainable']:,} ({r['adapter_trainable']:,} + "
                f"{r['trainable'] - r['adapter_trainable']:,}) | {share:.3f}% | {human(r['disk_bytes'])} | "
                f"{100 * r['disk_bytes'] / r['model_bytes']:.3f}% | {r['step_s']:.3f} | {r['peak_mib']:.0f} |")
        lines.append(line + (f" {r['dev_acc']:.3f} |" if not args.no_accuracy else ""))
    return "\n".join(lines)


def chart(rows, args, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("trainable parameters (% of the model, log)", [100 * r["trainable"] / r["base"] for r in rows], True),
              ("adapter on disk (% of the model, log)", [100 * r["disk_bytes"] / r["model_bytes"] for r in rows], True),
              ("seconds per training step", [r["step_s"] for r in rows], False),
              ("peak memory of training (MiB)", [r["peak_mib"] for r in rows], False)]
    if not args.no_accuracy:
        panels.append(("dev accuracy", [r["dev_acc"] for r in rows], False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6))
    labels = [r["method"] for r in rows]
    for ax, (title, values, log) in zip(axes, panels):
        ax.bar(labels, values, color=["#888888"] + ["#4c72b0"] * (len(rows) - 1))
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
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
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch", type=int, help="step-time batch (default: the course's, 80 SST / 10 CFIMDB)")
    p.add_argument("--train_batch", type=int, default=8, help="batch of the short training (dev accuracy)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--max_train", type=int, default=1000, help="training examples for dev accuracy (0: all)")
    p.add_argument("--max_dev", type=int, default=300)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", action="append", default=[], metavar="METHOD=VALUE", help="a method's learning rate")
    p.add_argument("--no_accuracy", action="store_true", help="sizes, step time and memory only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--png", help="bar chart file")
    p.add_argument("--json", help="also write the rows as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.lrs = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.checkpoint) == bool(args.shape):
        sys.exit("give --checkpoint (a real model) or --shape (random weights)")
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    src = data_dir(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"labels": os.path.join(src, f"{args.dataset}-label-mapping.json"),
                 "train": os.path.join(src, f"{args.dataset}-train.txt"),
                 "train_acc": os.path.join(tmp, "train.txt"), "dev": os.path.join(tmp, "dev.txt")}
        args.n_train = subsample(files["train"], files["train_acc"], 0 if args.no_accuracy else args.max_train)
        if args.no_accuracy:  # one epoch over a few examples: only the adapter's bytes are needed
            args.n_train = subsample(files["train"], files["train_acc"], 16)
        args.n_dev = subsample(os.path.join(src, f"{args.dataset}-dev.txt"), files["dev"],
                               16 if args.no_accuracy else args.max_dev)
        files["test"] = os.path.join(tmp, "test.txt")  # 8 lines: the task predicts a test set, the table ignores it
        subsample(os.path.join(src, f"{args.dataset}-test.txt"), files["test"], 8)
        rows, methods = [], args.methods.split(",")
        runs = Runs(len(methods))
        for method in methods:
            runs.begin(f"{method} (its own process: step time, memory" +
                       ("" if args.no_accuracy else f", {args.epochs} epoch(s) of training for dev acc") + ")")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--files", json.dumps(files)] + \
                [a for a in sys.argv[1:] if a not in ("--png", args.png or "", "--json", args.json or "")]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{method} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            runs.done(f"{method}: {time.perf_counter() - start:.0f} s")
    print(table(rows, args))
    if args.png:
        chart(rows, args, args.png)
        print(f"\nchart: {args.png}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
