"""Llama-3.2-1B-shaped model: minillama vs transformers on the same weights, side by side.

Random weights (no real checkpoint is needed), saved once in the Hugging Face
layout, then:
  1. load time and peak RSS of minillama.load_model vs transformers'
     from_pretrained, each in a fresh subprocess (resource.getrusage);
  2. greedy decode tokens/s, batch 1, KV cache, vs transformers' generate;
  3. MMLU-style scoring examples/s: a left-padded batch of ~300-token prompts,
     next-token logits of the last position only.
Ratios are minillama / transformers: for seconds and MiB lower is better, for
tokens/s and examples/s higher is better.  --use-sdpa runs minillama's opt-in
fused-attention path instead of its hand-written attention.

    .venv/bin/python bench/llama32.py                       # CPU, 1B shape, short runs
    .venv/bin/python bench/llama32.py --layers 4            # quicker
    python bench/llama32.py --device cuda --decode-tokens 128 --mmlu-batch 16
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from minillama import LlamaConfig, RopeScaling, load_model  # noqa: E402
from minillama.formats.hf import save_hf_dir  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.fast import prepare_for_decoding  # noqa: E402
from progress import Runs  # noqa: E402  (bench/, this script's folder)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def llama32_1b_config(layers: int, max_seq_len: int = 131072) -> LlamaConfig:
    """Llama-3.2-1B's config.json (reference facts), with n_layers adjustable."""
    return LlamaConfig(dim=2048, n_layers=layers, n_heads=32, n_kv_heads=8, vocab_size=128256, hidden_dim=8192,
                       norm_eps=1e-5, norm="rmsnorm", max_seq_len=max_seq_len, rope_theta=500000.0,
                       rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192), tie_embeddings=True)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rss_mb() -> float:
    """Peak RSS of this process in MiB.  getrusage's ru_maxrss survives fork+exec on Linux
    (a child starts with its parent's peak), so prefer the kernel's per-image VmHWM."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- 1. load, in a fresh process each -------------------------------------------------------
def child_load(which: str, path: str, dtype: str, device: str, use_sdpa: bool = False):
    """Runs in a subprocess: import, then time one load; print JSON."""
    if which == "transformers":
        import transformers  # noqa: F401  (import cost is not load cost)
    before = rss_mb()
    sync(device)
    start = time.perf_counter()
    if which == "minillama":
        model = load_model(path, dtype=dtype, device=device, use_sdpa=use_sdpa, fast=True)
    else:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], device_map=device)
    sync(device)
    seconds = time.perf_counter() - start
    loaded = rss_mb()
    # safetensors maps the file: pages count once touched, so run one step to touch every weight
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long, device=device))
    sync(device)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else 0.0
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb(), "rss_before_mb": before, "rss_loaded_mb": loaded, "gpu_peak_mb": gpu,
                      "params": params, "dtype": str(next(model.parameters()).dtype)}))


def measure_load(which: str, path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", which, path, "--dtype", args.dtype, "--device", args.device]
    out = subprocess.run(cmd + (["--use-sdpa"] if args.use_sdpa else []), capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{which} load failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 2. decode --------------------------------------------------------------------------
def time_it(fn, device, reps: int) -> float:
    fn()  # warm-up (allocations, kernels)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        result = fn()
    sync(device)
    return (time.perf_counter() - start) / reps, result


def decode(ours, theirs, args, vocab: int):
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1, args.prompt_tokens), generator=g).to(args.device)
    n = args.decode_tokens
    t_ours, ids_ours = time_it(lambda: ours.generate(prompt, n, temperature=0.0), args.device, args.reps)
    t_hf, ids_hf = time_it(lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                   max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                   pad_token_id=0), args.device, args.reps)
    same = int((ids_ours[0, -n:] == ids_hf[0, -n:]).cumprod(0).sum())
    return n / t_ours, n / t_hf, same


# -- 3. MMLU-style scoring ----------------------------------------------------------------
def scoring(ours, theirs, args, vocab: int):
    """B prompts of prompt_len +- 20% tokens, left-padded; last-position logits only."""
    g = torch.Generator().manual_seed(1)
    B, T = args.mmlu_batch, args.prompt_len
    lengths = torch.randint(int(T * 0.8), T + 1, (B,), generator=g)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    mask = (torch.arange(T)[None, :] >= (T - lengths)[:, None]).long()
    ids, mask = ids.to(args.device), mask.to(args.device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)

    @torch.no_grad()
    def run_ours():
        return ours(ids, mask, last_only=True)[0][:, -1].float()

    @torch.no_grad()
    def run_hf():
        return theirs(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1].float()

    t_ours, a = time_it(run_ours, args.device, args.reps)
    t_hf, b = time_it(run_hf, args.device, args.reps)
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return B / t_ours, B / t_hf, agree


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    # defaults (None) depend on the device: a full 1B run on GPU, a few-minute one on a small CPU
    p.add_argument("--layers", type=int, default=None, help="transformer blocks (16 = Llama-3.2-1B; CPU default 2)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens (cuda 128, cpu 8)")
    p.add_argument("--prompt-tokens", type=int, default=16, help="prompt length for decoding")
    p.add_argument("--mmlu-batch", type=int, default=None, help="scoring batch (cuda 16, cpu 1)")
    p.add_argument("--prompt-len", type=int, default=300, help="MMLU-like prompt length (tokens)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions after one warm-up (cuda 3, cpu 1)")
    p.add_argument("--use-sdpa", action="store_true", help="minillama's opt-in fused attention path")
    p.add_argument("--dir", default=None, help="keep the saved checkpoint here (default: a temp dir)")
    args = p.parse_args()
    if args.child:
        return child_load(args.child[0], args.child[1], args.dtype, args.device, args.use_sdpa)
    gpu = args.device == "cuda"
    for name, on_gpu, on_cpu in (("layers", 16, 2), ("decode_tokens", 128, 8), ("mmlu_batch", 16, 1), ("reps", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, on_gpu if gpu else on_cpu)

    import transformers

    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    config = llama32_1b_config(args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dir or tmp
        start = time.perf_counter()
        torch.set_default_dtype(dtype)  # initialise straight in bf16: no float32 copy of 1B weights
        model = Llama(config)
        torch.set_default_dtype(torch.float32)
        save_hf_dir(model, path)
        del model
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 2**20
        print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else os.cpu_count()} "
              f"{'' if args.device == 'cuda' else 'CPU threads'}), dtype {args.dtype}, layers {args.layers}, "
              f"minillama attention {'sdpa' if args.use_sdpa else 'hand-written'}, "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        print(f"checkpoint: {size:.0f} MiB written in {time.perf_counter() - start:.1f}s")

        steps = Runs(4)  # the slow parts, one line as each begins and ends
        steps.begin("minillama load (a fresh process)")
        ours_load = measure_load("minillama", path, args)
        steps.done("minillama load")
        steps.begin("transformers load (a fresh process)")
        hf_load = measure_load("transformers", path, args)
        steps.done("transformers load")
        print(f"params {ours_load['params'] / 1e9:.3f}B, loaded dtype {ours_load['dtype']} / {hf_load['dtype']}")
        print(f"{'metric':34s} {'minillama':>11s} {'transformers':>13s} {'ratio':>7s}  (minillama / transformers)")
        row = lambda name, a, b: print(f"{name:34s} {a:11.2f} {b:13.2f} {a / b if b else float('nan'):7.2f}")
        row("load seconds", ours_load["seconds"], hf_load["seconds"])
        row("peak RSS MiB, load only", ours_load["rss_loaded_mb"], hf_load["rss_loaded_mb"])
        row("peak RSS MiB, load + 1 forward", ours_load["peak_rss_mb"], hf_load["peak_rss_mb"])
        row("  growth over imports", ours_load["peak_rss_mb"] - ours_load["rss_before_mb"],
            hf_load["peak_rss_mb"] - hf_load["rss_before_mb"])
        if args.device == "cuda":
            row("load peak GPU MiB", ours_load["gpu_peak_mb"], hf_load["gpu_peak_mb"])

        ours = prepare_for_decoding(load_model(path, dtype=args.dtype, device=args.device, use_sdpa=args.use_sdpa, fast=True))
        theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=args.device).eval()
        steps.begin(f"decode {args.decode_tokens} tokens, both")
        tps_ours, tps_hf, same = decode(ours, theirs, args, config.vocab_size)
        steps.done("decode")
        row(f"decode tokens/s (b=1, {args.decode_tokens} new)", tps_ours, tps_hf)
        print(f"  greedy tokens identical for the first {same}/{args.decode_tokens} steps")
        steps.begin(f"MMLU-style scoring, batch {args.mmlu_batch}, both")
        eps_ours, eps_hf, agree = scoring(ours, theirs, args, config.vocab_size)
        steps.done("scoring")
        row(f"MMLU scoring examples/s (b={args.mmlu_batch}, T~{args.prompt_len})", eps_ours, eps_hf)
        print(f"  argmax of last-position logits agrees on {agree:.0%} of the batch")


if __name__ == "__main__":
    main()
