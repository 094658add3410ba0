"""Li & Liang's Figure 4 on E2E: prefix tuning's scores against the prefix length, and the
training time of prefix tuning against full fine-tuning on the same data.

Trains a prefix of each --lengths (default 1, 2, 5, 10, 20, 40; --mode prefix: through the
512-wide MLP, the paper's; ptuning2 or prompt also work) and one full fine-tune, every run
through the task code as `run_llama.py --task e2e` runs it (bench/e2e_accuracy.py's runner: the
first --max_train_rows training rows, --epochs, batch 10, the linear lr decay, the lr of
the method's lr_for("e2e") unless --lr, beam 5, the five official metrics on the test MRs).

Writes a CSV (one row per run) and a PNG of BLEU and ROUGE-L against the length (the fine-tune
as dashed lines), and prints the wall time per epoch of each prefix run and of the fine-tune
(the training steps only, as the training loop measures them) with the ratio prefix / finetune
(the paper: fine-tuning took 1.5x prefix tuning's time, i.e. a ratio of about 0.67).

    python bench/e2e_prefix_length.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --max_train_rows 5000 --epochs 1 --jobs 2 \\
        --csv bench/results/e2e_prefix_length.csv --png bench/results/e2e_prefix_length.png

Timing note: with --jobs 2 two runs share the CPU; on a machine other work also uses, the
load average printed at the start and the end says how much the per-epoch times can be trusted.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e_accuracy import add_common_flags, common_job, run_jobs  # noqa: E402
from minillama.metrics import METRIC_NAMES  # noqa: E402


def epoch_seconds(row: dict) -> float:
    return sum(row["epoch_s"]) / len(row["epoch_s"])


def write_csv(path: str, rows: list):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "length", "lr", "trainable", "train_s_per_epoch"] + list(METRIC_NAMES))
        for r in rows:
            w.writerow([r["name"], r["settings"].get("length", ""), r["lr"], r["trainable"],
                        f"{epoch_seconds(r):.2f}"] + [r["scores"].get(m) for m in METRIC_NAMES])


def plot(path: str, prefixes: list, finetune: dict, title: str):
    """BLEU and ROUGE-L against the prefix length (log axis); the fine-tune's as dashed lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lengths = [r["settings"]["length"] for r in prefixes]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for metric, color in (("BLEU", "tab:blue"), ("ROUGE_L", "tab:orange")):
        ax.plot(lengths, [r["scores"][metric] for r in prefixes], "o-", color=color, label=f"prefix {metric}")
        if finetune:
            ax.axhline(finetune["scores"][metric], color=color, ls="--", lw=1, label=f"finetune {metric}")
    ax.set_xscale("log")
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(n) for n in lengths])
    ax.set_xlabel("prefix length (virtual tokens)")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(p, max_train_rows=5000)
    p.add_argument("--lengths", default="1,2,5,10,20,40", help="comma-separated prefix lengths")
    p.add_argument("--mode", default="prefix", choices=["prefix", "ptuning2", "prompt"])
    p.add_argument("--lr", type=float, default=None, help="the prefix runs' lr (default: --mode's lr_for('e2e'))")
    p.add_argument("--no_finetune", action="store_true", help="skip the fine-tune (no timing ratio)")
    p.add_argument("--csv", default="e2e_prefix_length.csv")
    p.add_argument("--png", default="e2e_prefix_length.png")
    args = p.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    common, mrs = common_job(args)
    jobs = [dict(common, name=args.mode, lr=args.lr, settings={"length": n}) for n in lengths]
    if not args.no_finetune:
        jobs.append(dict(common, name="finetune", lr=None))
    print(f"{len(jobs)} runs: {args.mode} at lengths {lengths}" + ("" if args.no_finetune else " and finetune"),
          flush=True)
    start = time.perf_counter()
    results = run_jobs(jobs, args.jobs)
    wall = time.perf_counter() - start
    prefixes = [r for r in results if r["name"] == args.mode]
    finetune = next((r for r in results if r["name"] == "finetune"), None)

    print(f"\n{args.eval_split} scores ({mrs} MRs)")
    print(f"{'method':9s} {'length':>6s} {'lr':>7s} {'trainable':>10s} {'train s/ep':>10s} {'/ finetune':>10s} "
          + " ".join(f"{m:>7s}" for m in METRIC_NAMES))
    for r in prefixes + ([finetune] if finetune else []):
        ratio = f"{epoch_seconds(r) / epoch_seconds(finetune):10.2f}" if finetune else f"{'-':>10s}"
        print(f"{r['name']:9s} {r['settings'].get('length', '-'):>6} {r['lr']:7.0e} {r['trainable']:10,d} "
              f"{epoch_seconds(r):10.1f} {ratio} " + " ".join(f"{r['scores'][m]:7.4f}" for m in METRIC_NAMES))
    if finetune:
        for r in prefixes:
            print(f"wall time per epoch: {args.mode} length {r['settings']['length']} {epoch_seconds(r):.1f} s, "
                  f"finetune {epoch_seconds(finetune):.1f} s, ratio {args.mode} / finetune "
                  f"{epoch_seconds(r) / epoch_seconds(finetune):.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    write_csv(args.csv, results)
    title = (f"{os.path.basename(args.checkpoint)}, E2E {args.eval_split} ({mrs} MRs): first "
             f"{args.max_train_rows or 'all'} train rows, {args.epochs} epoch(s), beam {args.beam_size}")
    plot(args.png, prefixes, finetune, title)
    print(f"wrote {args.csv} and {args.png}; wall time {wall:.0f} s for {len(results)} runs, "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
