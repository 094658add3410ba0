"""Dev accuracy, mean (std) over seeds, of every classification option on one
checkpoint and data set, in the course's table format, with the wall time.

Options (names for --options):
    prompt                                 zero-shot, the course prompt (no training)
    finetune, lora                         a cls head on the last token
    prefix:cls, prefix:verbalizer          prefix tuning (MLP reparameterization, folded after training)
    prompttune:cls, prompttune:verbalizer  prompt tuning (input embeddings)
    ptuning2:cls, ptuning2:verbalizer      P-tuning v2 (per-layer keys/values, trained directly)
Every run goes through the task code in-process (minillama.cli.parse_args +
minillama.tasks.classify.run), as `run_llama.py` would, with its default flags
unless --extra changes them.

    python bench/accuracy.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --dataset sst \\
        --seeds 3 --max_train 2000 --epochs 5 --jobs 2
    # per-option flags (repeatable; NAME is an option, 'prefix*' for the six prefix ones, or 'all'):
    python bench/accuracy.py ... --extra "finetune=--lr 1e-3" --extra "prefix*=--prefix_length 20"
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import math
import os
import random
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODES = {"prefix": "prefix", "prompttune": "prompt", "ptuning2": "ptuning2"}
OPTIONS: Dict[str, List[str]] = {"prompt": ["--option", "prompt"], "finetune": ["--option", "finetune"],
                                 "lora": ["--option", "lora"]}
for _name, _mode in MODES.items():
    for _head in ("cls", "verbalizer"):
        OPTIONS[f"{_name}:{_head}"] = ["--option", "prefix", "--prefix_mode", _mode, "--prefix_head", _head]
TITLES = {"prompt": "Zero-Shot Prompting", "finetune": "Finetuning", "lora": "LoRA",
          "prefix": "Prefix Tuning", "prompttune": "Prompt Tuning", "ptuning2": "P-tuning v2"}


def data_dir(flag: str) -> str:
    """--data_dir, or data/ with a fallback to the mirror's coursework folder."""
    if flag:
        return flag
    for d in (os.path.join(REPO, "data"), os.path.join(REPO, "..", "shared", "assets", "coursework")):
        if os.path.isfile(os.path.join(d, "sst-dev.txt")):
            return d
    sys.exit("no course data in data/ or ../shared/assets/coursework: run ./setup.sh or pass --data_dir")


def subsample(src: str, dst: str, n: int, seed: int = 0):
    """A fixed random n-line subset of src (the same for every option and seed)."""
    with open(src, encoding="utf-8") as f:
        lines = [l for l in f if l.strip()]
    if n and n < len(lines):
        lines = [lines[i] for i in sorted(random.Random(seed).sample(range(len(lines)), n))]
    with open(dst, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return len(lines)


def extra_flags(name: str, extras: List[str]) -> List[str]:
    out = []
    for item in extras:
        pattern, _, flags = item.partition("=")
        if pattern == "all" or fnmatch.fnmatch(name, pattern):
            out += shlex.split(flags)
    return out


def one_run(job: dict) -> dict:
    """One (option, seed) in this process: returns dev/test accuracy and seconds."""
    import torch
    from minillama.cli import parse_args, seed_everything
    from minillama.tasks import classify
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    tmp = job["tmp"]
    tag = f"{job['name'].replace(':', '-')}-{job['seed']}"
    argv = OPTIONS[job["name"]] + [
        "--pretrained-model-path", job["checkpoint"], "--tokenizer", job["tokenizer"],
        "--train", job["train"], "--dev", job["dev"], "--test", job["test"], "--label-names", job["labels"],
        "--dev_out", os.path.join(tmp, f"{tag}-dev.txt"), "--test_out", os.path.join(tmp, f"{tag}-test.txt"),
        "--seed", str(job["seed"])] + job["common"] + extra_flags(job["name"], job["extras"])
    if job["name"] not in ("prompt", "finetune", "lora"):
        argv += ["--save_adapter", os.path.join(tmp, f"{tag}-adapter")]
    args = parse_args(argv)
    seed_everything(args.seed)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):  # no progress bars
        accs = classify.run(args)
    seconds = time.perf_counter() - start
    with open(os.path.join(tmp, f"{tag}.log"), "w") as f:
        f.write(" ".join(argv) + "\n" + log.getvalue())
    return {"name": job["name"], "seed": job["seed"], "dev": accs["dev"], "test": accs["test"],
            "seconds": seconds, "argv": argv}


def mean_std(xs: List[float]):
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def title(name: str) -> str:
    base, _, head = name.partition(":")
    return TITLES[base] + (f" ({head} head)" if head else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="stories42M.pt")
    p.add_argument("--tokenizer", default=None, help="default: tokenizer.model (run_llama.py's default)")
    p.add_argument("--norm", default=None, choices=["layernorm", "rmsnorm"])
    p.add_argument("--dataset", default="sst", choices=["sst", "cfimdb"])
    p.add_argument("--data_dir", default=None, help="default: data/, else ../shared/assets/coursework")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first_seed", type=int, default=1337)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=None, help="default: the course's (sst 80, cfimdb 10)")
    p.add_argument("--max_train", type=int, default=None, help="train on a fixed random subset of N examples")
    p.add_argument("--max_dev", type=int, default=None, help="evaluate on a fixed random subset of N dev examples")
    p.add_argument("--max_test", type=int, default=None,
                   help="with --with_test: a fixed random subset of N test examples (quick runs)")
    p.add_argument("--max_sentence_len", type=int, default=None)
    p.add_argument("--use_sdpa", action="store_true", help="torch's fused attention (same for every option)")
    p.add_argument("--with_test", action="store_true",
                   help="also predict the real test set (default: 8 test lines, dev accuracy only)")
    p.add_argument("--options", default=",".join(OPTIONS), help="comma-separated, from: " + ", ".join(OPTIONS))
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS",
                   help="run_llama.py flags for the options matching NAME (glob; 'all' for every option)")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    p.add_argument("--json", default=None, help="also write every run's result here")
    p.add_argument("--keep", default=None, help="keep outputs, adapters and logs in this directory")
    args = p.parse_args()
    names = args.options.split(",")
    for n in names:
        if n not in OPTIONS:
            sys.exit(f"unknown option {n!r}; choose from {', '.join(OPTIONS)}")
    d = data_dir(args.data_dir)
    tmp = args.keep or tempfile.mkdtemp(prefix="minillama-acc-")
    os.makedirs(tmp, exist_ok=True)
    files = {s: os.path.join(tmp, f"{args.dataset}-{s}.txt") for s in ("train", "dev", "test")}
    n_full = sum(1 for l in open(os.path.join(d, f"{args.dataset}-train.txt"), encoding="utf-8") if l.strip())
    n_train = subsample(os.path.join(d, f"{args.dataset}-train.txt"), files["train"], args.max_train or 0)
    n_dev = subsample(os.path.join(d, f"{args.dataset}-dev.txt"), files["dev"], args.max_dev or 0)
    # the test set is only scored with --with_test; else 8 lines keep the task code's test pass cheap
    n_test = subsample(os.path.join(d, f"{args.dataset}-test.txt"), files["test"],
                       (args.max_test or 0) if args.with_test else 8)
    batch = args.batch_size or (80 if args.dataset == "sst" else 10)
    common = ["--epochs", str(args.epochs), "--batch_size", str(batch)]
    common += ["--norm", args.norm] if args.norm else []
    common += ["--max_sentence_len", str(args.max_sentence_len)] if args.max_sentence_len else []
    common += ["--use_gpu"] if args.use_gpu else []
    common += ["--use_sdpa"] if args.use_sdpa else []
    tokenizer = args.tokenizer or "tokenizer.model"
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    jobs = [dict(name=n, seed=args.first_seed + i, checkpoint=args.checkpoint, tokenizer=tokenizer, tmp=tmp,
                 labels=os.path.join(d, f"{args.dataset}-label-mapping.json"), common=common, extras=args.extra,
                 threads=threads, **files) for n in names for i in range(args.seeds)]
    print(f"{os.path.basename(args.checkpoint)} on {args.dataset}: train {n_train} of {n_full}, dev {n_dev}, "
          f"test {n_test if args.with_test else 'not scored'}, "
          f"{args.seeds} seed(s), epochs {args.epochs}, batch {batch}, jobs {args.jobs}; extra {args.extra or '-'}",
          flush=True)
    start = time.perf_counter()
    results = []
    if args.jobs > 1:
        import multiprocessing as mp
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for r in pool.map(one_run, jobs):
                results.append(r)
                print(f"  {r['name']:22s} seed {r['seed']}  dev {r['dev']:.3f}  {r['seconds']:7.1f} s", flush=True)
    else:
        for job in jobs:
            r = one_run(job)
            results.append(r)
            print(f"  {r['name']:22s} seed {r['seed']}  dev {r['dev']:.3f}  {r['seconds']:7.1f} s", flush=True)
    wall = time.perf_counter() - start
    ds = {"sst": "SST", "cfimdb": "CFIMDB"}[args.dataset]
    print(f"\n{'option':24s} {'dev acc mean (std)':>20s} {'s/run':>8s}")
    for n in names:
        rs = [r for r in results if r["name"] == n]
        m, s = mean_std([r["dev"] for r in rs])
        print(f"{n:24s} {m:13.3f} ({s:.3f}) {sum(r['seconds'] for r in rs) / len(rs):8.1f}")
    print(f"wall time {wall:.0f} s for {len(results)} runs\n")
    for n in names:  # the course README's format
        rs = [r for r in results if r["name"] == n]
        m, s = mean_std([r["dev"] for r in rs])
        test = "-"
        if args.with_test and args.dataset == "sst":
            test = "%.3f (%.3f)" % mean_std([r["test"] for r in rs])
        print(f"{title(n)} for {ds}:\nDev Accuracy: {m:.3f} ({s:.3f})\nTest Accuracy: {test}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "n_train": n_train, "wall_s": wall, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
