"""Several tasks' prefixes trained in one run (`--task_names`) against the same tasks trained one
at a time: dev accuracy per task (and test accuracy where the test labels are real), trainable
prefix parameters, and the wall and CPU time of each, as a Markdown table.

    python bench/multitask.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --norm rmsnorm --epochs 1 --shared 0,20

The runs, one after another in this process, each seeded as run_llama.py seeds it and run
through the task code itself (configs built here, no argv strings):
- one at a time: each task alone (tasks/classify.py, `--option prefix`: P-tuning v2 with the
  classification defaults, `--length` positions, the mean head);
- together: one run of tasks/multitask.py for each N of --shared: N shared + (length - N) own
  positions, so that every row reads as many prefix positions as it does alone.
Every run has the same epochs, batch size, learning rate (the method's) and seed.  A run's time
(wall, and this process's CPU time: steadier where other work shares the machine) counts
everything it does: loading the model, training, the dev pass of every epoch, the
final dev and test predictions and the files.  Progress: a line as each run begins and ends
(with an estimate of what is left, bench/progress.py) and the training loop's tqdm bars; each
run's own output goes to <out_dir>/<run>.log.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from typing import Dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from accuracy import data_dir, subsample  # noqa: E402
from progress import Runs, minutes  # noqa: E402

TITLES = {"sst": "SST", "cfimdb": "CFIMDB"}


def task_files(args, tmp: str) -> Dict[str, Dict[str, str]]:
    """{task: {split: path, "labels": path}}: the course files, or fixed random subsets of them."""
    d, out = data_dir(args.data_dir), {}
    os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
    for task in args.tasks.split(","):
        out[task] = {"labels": os.path.join(d, f"{task}-label-mapping.json")}
        for split, limit in (("train", args.max_train), ("dev", args.max_dev), ("test", args.max_test)):
            src = os.path.join(d, f"{task}-{split}.txt")
            out[task][split] = src if not limit else os.path.join(tmp, "data", f"{task}-{split}.txt")
            if limit:
                subsample(src, out[task][split], limit)
    return out


def timed(label: str, tmp: str, work):
    """work() with its printed lines in <tmp>/<label>.log (the tqdm bars stay on stderr):
    (result, wall seconds, CPU seconds of this process: on a shared machine, the steadier measure)."""
    start, cpu = time.perf_counter(), time.process_time()
    with open(os.path.join(tmp, f"{label}.log"), "w") as log, contextlib.redirect_stdout(log):
        result = work()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="stories42M.pt")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--norm", default=None, choices=["layernorm", "rmsnorm"])
    p.add_argument("--data_dir", default=None, help="default: data/, else ../shared/assets/coursework")
    p.add_argument("--tasks", default="sst,cfimdb")
    p.add_argument("--shared", default="0,20", help="comma-separated shared prefix lengths, one joint run each")
    p.add_argument("--length", type=int, default=None, help="prefix positions a row reads (default: the "
                                                            "classification default of P-tuning v2)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=None, help="default: TrainConfig's")
    p.add_argument("--max_train", type=int, default=None, help="a fixed random subset of N rows per task")
    p.add_argument("--max_dev", type=int, default=None)
    p.add_argument("--max_test", type=int, default=None)
    p.add_argument("--max_sentence_len", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="default: RunConfig's")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier times on a shared machine)")
    p.add_argument("--out_dir", default=None, help="keep outputs, adapters and logs here (default: a temp dir)")
    args = p.parse_args()
    for flag, path in (("--checkpoint", args.checkpoint), ("--tokenizer", args.tokenizer)):
        if path and not os.path.exists(path):
            sys.exit(f"error: {flag} {path} not found")

    import torch
    from minillama.adapters import PrefixConfig
    from minillama.data import read_examples
    from minillama.runconfig import RunConfig, seed_everything
    from minillama.tasks import classify, multitask
    from minillama.classification import placeholder_note
    from minillama.tasks.classify import ClassifyConfig
    from minillama.tasks.multitask import MultitaskConfig, TaskConfig
    from minillama.train import TrainConfig

    torch.set_num_threads(args.threads)
    tmp = args.out_dir or tempfile.mkdtemp(prefix="minillama-multitask-")
    os.makedirs(tmp, exist_ok=True)
    files = task_files(args, tmp)
    tasks = list(files)
    settings = PrefixConfig.task_settings["classify"]
    length = args.length or settings["length"]
    shared = [int(n) for n in args.shared.split(",") if n.strip()]
    run = RunConfig(model_path=args.checkpoint, tokenizer_path=args.tokenizer, norm=args.norm,
                    **({"seed": args.seed} if args.seed is not None else {}))
    training = TrainConfig(epochs=args.epochs, **({"batch_size": args.batch_size} if args.batch_size else {}))
    real_test = [t for t in tasks if not placeholder_note(files[t]["test"], torch.tensor(
        [ex.label for ex in read_examples(files[t]["test"])]))]
    model_cfg = run.load()[0].config  # prefix parameters per position: layers x 2 x kv dim (not timed)
    per_position = model_cfg.n_layers * 2 * model_cfg.kv_dim

    def out(label: str, name: str) -> str:
        os.makedirs(os.path.join(tmp, label), exist_ok=True)
        return os.path.join(tmp, label, name)

    def alone(task: str):
        f = files[task]
        cfg = ClassifyConfig(option="prefix", method=PrefixConfig(**{**settings, "length": length}), train=f["train"],
                             dev=f["dev"], test=f["test"], label_names=f["labels"], training=training,
                             max_sentence_len=args.max_sentence_len, dev_out=out(task, "dev.txt"),
                             test_out=out(task, "test.txt"), save_adapter=out(task, "adapter"))
        seed_everything(run.seed)
        return {task: classify.run(run, cfg)}

    def together(n: int):
        label = f"together-{n}"
        cfg = MultitaskConfig(
            [TaskConfig(t, files[t]["train"], files[t]["dev"], files[t]["test"], files[t]["labels"],
                        out(label, f"{t}-dev.txt"), out(label, f"{t}-test.txt"), out(label, f"{t}-adapter"))
             for t in tasks], PrefixConfig(**{**settings, "length": length - n}), shared_length=n,
            training=training, max_sentence_len=args.max_sentence_len)
        seed_everything(run.seed)
        return multitask.run(run, cfg)

    jobs = [(t, lambda t=t: alone(t)) for t in tasks] + [(f"together-{n}", lambda n=n: together(n)) for n in shared]
    runs, results = Runs(len(jobs)), {}
    for label, work in jobs:
        runs.begin(label)
        results[label] = timed(label, tmp, work)
        accs = results[label][0]
        runs.done(f"{label}: " + ", ".join(f"{t} dev {a['dev']:.3f}" for t, a in accs.items())
                  + f", {results[label][1]:.0f} s ({results[label][2]:.0f} s CPU)")

    header = ([f"{TITLES.get(t, t)} dev" for t in tasks] + [f"{TITLES.get(t, t)} test" for t in real_test]
              + ["prefix parameters", "wall time", "CPU time"])
    print(f"| run ({args.epochs} epoch(s), {length} prefix positions a row) | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    separate = {t: results[t][0][t] for t in tasks}
    wall, cpu = ([results[t][i] for t in tasks] for i in (1, 2))
    cells = ([f"{separate[t]['dev']:.3f}" for t in tasks] + [f"{separate[t]['test']:.3f}" for t in real_test]
             + [f"{len(tasks) * length * per_position:,}"]
             + [f"{minutes(sum(x))} ({' + '.join(minutes(s) for s in x)})" for x in (wall, cpu)])
    print(f"| one at a time ({', then '.join(tasks)}) | " + " | ".join(cells) + " |")
    for n in shared:
        accs, w, c = results[f"together-{n}"]
        cells = ([f"{accs[t]['dev']:.3f}" for t in tasks] + [f"{accs[t]['test']:.3f}" for t in real_test]
                 + [f"{(n + len(tasks) * (length - n)) * per_position:,}",
                    f"{minutes(w)} ({w / sum(wall):.2f}x)", f"{minutes(c)} ({c / sum(cpu):.2f}x)"])
        print(f"| one run, {n} shared + {length - n} own positions | " + " | ".join(cells) + " |")
    print(f"\noutputs, adapters and each run's log: {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
