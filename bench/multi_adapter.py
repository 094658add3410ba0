"""Time per example: one batch mixing the rows of two deep-prefix adapters
(minillama.adapters.multi.MultiAdapter) vs the same rows as two single-adapter batches.

Two P-tuning v2 adapters (prefix lengths --lengths, e.g. 10 and 20, so the mixed batch
pads the shorter one with masked keys) on a model of --shape with random weights.
Each round times, on the same random rows (B/2 per adapter, --tokens tokens each):
    score     one forward, last position only (what classification and MMLU read)
    generate  greedy decoding of --new_tokens tokens through the KV cache
for "mixed" (one batch of B rows) and "separate" (two batches of B/2, each through its
adapter's own backbone).  Rounds interleave the two; each keeps its fastest (a busy machine
slows some rounds down, never speeds one up).  On CPU the clock is the process's CPU time
(with --threads 1, the work done: steady when other jobs share the machine); on CUDA, wall time.

    python bench/multi_adapter.py --shape stories42M --batch 16 --tokens 64 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minillama.adapters import PrefixConfig, attach  # noqa: E402
from minillama.adapters.multi import MultiAdapter  # noqa: E402
from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.fast import prepare_for_decoding, speed_up  # noqa: E402

SHAPES = {"stories42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024),
          "stories260K": dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, max_seq_len=512,
                              hidden_dim=172)}


def timed(fn, cuda: bool) -> float:
    clock = time.perf_counter if cuda else time.process_time
    start = clock()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return clock() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=list(SHAPES), default="stories42M")
    p.add_argument("--batch", type=int, default=16, help="rows of the mixed batch (half per adapter)")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=16)
    p.add_argument("--lengths", type=str, default="10,20", help="the two adapters' prefix lengths")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = speed_up(Llama(LlamaConfig(**SHAPES[args.shape], norm="rmsnorm")).to(args.device).eval())
    lengths = [int(x) for x in args.lengths.split(",")]
    adapters = {f"a{i}": attach(base, PrefixConfig(length=n)).to(args.device).eval() for i, n in enumerate(lengths)}
    multi = MultiAdapter(base, adapters)
    prepare_for_decoding(base)  # as the CLI decodes (fast/layout.py)
    half = args.batch // 2
    ids = torch.randint(0, base.config.vocab_size, (2 * half, args.tokens), device=args.device)
    names = ["a0"] * half + ["a1"] * half
    rows = multi.rows(names)

    jobs = {
        ("score", "mixed"): lambda: rows(ids, last_only=True),
        ("score", "separate"): lambda: [adapters[n](ids[i * half:(i + 1) * half], last_only=True)
                                        for i, n in enumerate(adapters)],
        ("generate", "mixed"): lambda: rows.generate(ids, args.new_tokens),
        ("generate", "separate"): lambda: [adapters[n].generate(ids[i * half:(i + 1) * half], args.new_tokens)
                                           for i, n in enumerate(adapters)],
    }
    times = {k: [] for k in jobs}
    with torch.inference_mode():
        for job in jobs.values():  # warm-up (decode layout, allocator)
            job()
        for _ in tqdm(range(args.rounds), desc="rounds", leave=False):  # the bar moves between timings
            for key, job in jobs.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[key].append(timed(job, args.device.startswith("cuda")))
    n = 2 * half
    print(f"{args.shape} ({args.device}, {torch.get_num_threads()} threads): {n} rows, {args.tokens} tokens, "
          f"prefix lengths {lengths}, {args.new_tokens} new tokens; fastest of {args.rounds} rounds"
          f"{' (CPU time)' if not args.device.startswith('cuda') else ''}\n")
    print("| job | mixed batch (ms/example) | two single-adapter batches (ms/example) | separate / mixed |")
    print("|---|---:|---:|---:|")
    for job in ("score", "generate"):
        mixed, separate = (min(times[job, kind]) / n * 1e3 for kind in ("mixed", "separate"))
        print(f"| {job} | {mixed:.2f} | {separate:.2f} | {separate / mixed:.2f}x |")


if __name__ == "__main__":
    main()
