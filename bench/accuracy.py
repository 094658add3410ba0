"""Dev accuracy, mean (std) over seeds, of every classification option on one
checkpoint and data set, in the course's table format, with the wall time.

Options (names for --options):
    prompt                                 zero-shot, the course prompt (no training)
    finetune, lora                         a cls head on the last token
    prefix:cls, prefix:verbalizer          prefix tuning (MLP reparameterization, folded after training)
    prompttune:cls, prompttune:verbalizer  prompt tuning (input embeddings)
    ptuning2:cls, ptuning2:verbalizer      P-tuning v2 (per-layer keys/values, trained directly)
Every run goes through the task code in-process (minillama.tasks.classify.run), as
`run_llama.py` would, with configs built here directly (no argv strings); each
config field keeps its default unless --set changes it.

    python bench/accuracy.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --dataset sst \\
        --seeds 3 --max_train 2000 --epochs 5 --jobs 2
    # per-option settings (repeatable; NAME is an option, 'prefix*' for the six prefix ones, or 'all');
    # FIELD is a ClassifyConfig field, dotted into training.* / method.* / run.* (RunConfig):
    python bench/accuracy.py ... --set "finetune:training.lr=1e-3" --set "prefix*:method.length=20"
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
import ast
import dataclasses
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from progress import run_all as progress_run_all  # noqa: E402

MODES = {"prefix": "prefix", "prompttune": "prompt", "ptuning2": "ptuning2"}
# bench name -> (run_llama.py option, method name in minillama.adapters.REGISTRY or None, head or None)
OPTIONS: Dict[str, tuple] = {"prompt": ("prompt", None, None), "finetune": ("finetune", "finetune", None),
                             "lora": ("lora", "lora", None)}
for _name, _mode in MODES.items():
    for _head in ("cls", "verbalizer"):
        OPTIONS[f"{_name}:{_head}"] = ("prefix", _mode, _head)
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


def settings_for(name: str, sets: List[str]) -> List[tuple]:
    """[(dotted field, value)] of the --set items whose NAME pattern matches this option."""
    out = []
    for item in sets:
        pattern, _, assignment = item.partition(":")
        path, _, text = assignment.partition("=")
        if pattern == "all" or fnmatch.fnmatch(name, pattern):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string, e.g. method.init=text
            out.append((path, value))
    return out


def override(cfg, path: str, value):
    """cfg with the dotted field set, rebuilt with dataclasses.replace so every config's
    __post_init__ checks the new value."""
    head, _, rest = path.partition(".")
    if not any(f.name == head for f in dataclasses.fields(cfg)):
        sys.exit(f"--set {path}: {type(cfg).__name__} has no field {head!r}")
    return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, value) if rest else value})


def build_configs(job: dict):
    """(RunConfig, ClassifyConfig) of one job."""
    from minillama.adapters import make_config
    from minillama.runconfig import RunConfig
    from minillama.tasks.classify import ClassifyConfig
    from minillama.train import TrainConfig
    option, method, head = OPTIONS[job["name"]]
    tmp, tag = job["tmp"], f"{job['name'].replace(':', '-')}-{job['seed']}"
    run = RunConfig(model_path=job["checkpoint"], tokenizer_path=job["tokenizer"], norm=job["norm"],
                    use_sdpa=job["use_sdpa"], device=job["device"], seed=job["seed"], progress=False)
    cfg = ClassifyConfig(option=option, method=make_config(method) if method else None, head=head,
                         train=job["train"], dev=job["dev"], test=job["test"], label_names=job["labels"],
                         dev_out=os.path.join(tmp, f"{tag}-dev.txt"), test_out=os.path.join(tmp, f"{tag}-test.txt"),
                         max_sentence_len=job["max_sentence_len"],
                         training=TrainConfig(epochs=job["epochs"], batch_size=job["batch_size"]),
                         save_adapter=os.path.join(tmp, f"{tag}-adapter") if option == "prefix" else None)
    for path, value in settings_for(job["name"], job["sets"]):
        if path.startswith("run."):
            run = override(run, path[len("run."):], value)
        else:
            cfg = override(cfg, path, value)
    return run, cfg


def one_run(job: dict) -> dict:
    """One (option, seed) in this process: returns dev/test accuracy and seconds."""
    import torch
    from minillama.runconfig import seed_everything
    from minillama.tasks import classify
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    run, cfg = build_configs(job)
    seed_everything(run.seed)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
        accs = classify.run(run, cfg)
    seconds = time.perf_counter() - start
    tag = f"{job['name'].replace(':', '-')}-{job['seed']}"
    with open(os.path.join(job["tmp"], f"{tag}.log"), "w") as f:
        f.write(f"{run}\n{cfg}\n" + log.getvalue())
    return {"name": job["name"], "seed": job["seed"], "dev": accs["dev"], "test": accs["test"],
            "seconds": seconds, "settings": settings_for(job["name"], job["sets"])}


def mean_std(xs: List[float]):
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def title(name: str) -> str:
    base, _, head = name.partition(":")
    return TITLES[base] + (f" ({head} head)" if head else "")


def run_all(jobs: List[dict], n_jobs: int) -> List[dict]:
    """one_run of every job, n_jobs at a time, with a line as each begins and ends (bench/progress.py)."""
    return progress_run_all(one_run, jobs, n_jobs, lambda job: f"{job['name']} seed {job['seed']}",
                            lambda r: f"{r['name']:22s} seed {r['seed']}  dev {r['dev']:.3f}  {r['seconds']:7.1f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="stories42M.pt")
    p.add_argument("--tokenizer", default=None, help="default: the model's own (RunConfig's default)")
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
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="NAME:FIELD=VALUE",
                   help="a config field for the options matching NAME (glob; 'all' for every option), e.g. "
                        "'prefix*:method.length=20', 'finetune:training.lr=1e-3', 'all:run.bf16=True'")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    p.add_argument("--json", default=None, help="also write every run's result here")
    p.add_argument("--keep", default=None, help="keep outputs, adapters and logs in this directory")
    args = p.parse_args()
    names = args.options.split(",")
    for n in names:
        if n not in OPTIONS:
            sys.exit(f"unknown option {n!r}; choose from {', '.join(OPTIONS)}")
    for flag, path in (("--checkpoint", args.checkpoint), ("--tokenizer", args.tokenizer)):
        if path and not os.path.exists(path):
            sys.exit(f"error: {flag} {path} not found" + (": `bash setup.sh` downloads it (or: curl -fL -o "
                     "stories42M.pt https://www.cs.cmu.edu/~vijayv/stories42M.pt)" if path.endswith("stories42M.pt")
                     else ""))
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
    from minillama.cli import choose_device
    device = choose_device(args.use_gpu)  # once: its note about a missing GPU is printed once
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    jobs = [dict(name=n, seed=args.first_seed + i, checkpoint=args.checkpoint, tokenizer=args.tokenizer, tmp=tmp,
                 labels=os.path.join(d, f"{args.dataset}-label-mapping.json"), epochs=args.epochs, batch_size=batch,
                 norm=args.norm, max_sentence_len=args.max_sentence_len, device=device,
                 use_sdpa=args.use_sdpa, sets=args.sets, threads=threads, **files)
            for n in names for i in range(args.seeds)]
    print(f"{os.path.basename(args.checkpoint)} on {args.dataset}: train {n_train} of {n_full}, dev {n_dev}, "
          f"test {n_test if args.with_test else 'not scored'}, "
          f"{args.seeds} seed(s), epochs {args.epochs}, batch {batch}, jobs {args.jobs}; set {args.sets or '-'}",
          flush=True)
    start = time.perf_counter()
    results = run_all(jobs, args.jobs)
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
