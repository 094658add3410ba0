#!/usr/bin/env python3
"""Decode speed, batch 1: minillama (KV cache / no cache / SDPA) vs transformers, same weights, one run.

    .venv/bin/python bench/generate.py                       # CPU, stories42M shape, fp32
    .venv/bin/python bench/generate.py --device cuda --dtype bfloat16

The model is stories42M-shaped (dim 512, 8 layers, 8 heads, vocab 32000,
max_seq_len 1024, RMSNorm) with random weights.  The same weights are copied
into transformers' LlamaForCausalLM (q/k rows permuted from the adjacent-pair
RoPE convention to HF's rotate-half one); their logits are compared before any
timing.  Every engine decodes greedily from the same random prompt for the same
number of new tokens (no early stop); tokens/s = new tokens / wall time of the
whole generate call (prefill included), best of --repeats interleaved rounds.

On a CPU in float32, minillama's generate first re-stores its weights fused and
column-major (minillama/layout.py), the layout in which one-row products read
memory fastest; transformers keeps nn.Linear's row-major layout.  The last line
prints the speed of the weight products alone in each layout: batch-1
decoding is bound by reading the weights, so those are each engine's ceiling.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.formats import resolve_dtype  # noqa: E402
from minillama.formats.hf import hf_tensors  # noqa: E402
from minillama.fast import prepare_for_decoding, speed_up  # noqa: E402
from minillama.fast.layout import fused_weight  # noqa: E402
from minillama.core.model import Llama  # noqa: E402

SHAPES = {
    "stories42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024,
                       multiple_of=32, norm="rmsnorm"),
    # tiny: the per-token cost is almost all framework overhead, not arithmetic
    "stories260K": dict(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512,
                        max_seq_len=512, norm="rmsnorm"),
}


def to_transformers(model: Llama):
    """A transformers LlamaForCausalLM holding exactly model's weights."""
    from transformers import LlamaConfig as HFConfig, LlamaForCausalLM

    c = model.config
    hf_config = HFConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim,
                         num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                         num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_seq_len,
                         rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=c.tie_embeddings,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0)
    hf_sd = hf_tensors(model)  # HF names, q/k rows permuted to rotate-half (minillama/formats/hf.py)
    hf_sd.setdefault("lm_head.weight", model.output.weight.detach())  # a strict load wants it even when tied
    hf = LlamaForCausalLM(hf_config)
    hf.load_state_dict({k: v.clone() for k, v in hf_sd.items()}, strict=True)
    hf.generation_config.eos_token_id = None  # decode exactly --new_tokens, as minillama does
    hf.generation_config.pad_token_id = 0
    return hf.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeats: int):
    """(best seconds, last result) over repeats calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def weight_floor(matrices, n_tokens: int, device, repeats: int) -> float:
    """tokens/s of the weight products alone: one one-row product per matrix
    [in, out] per token, nothing else.  Batch-1 decoding reads every weight once
    per token, so this bounds any engine that multiplies in this layout."""
    inputs = [torch.randn(1, m.shape[0], device=device, dtype=m.dtype) for m in matrices]

    def step():
        for _ in range(n_tokens):
            for m, x in zip(matrices, inputs):
                x @ m

    step()
    seconds, _ = best_time(step, device, repeats)
    return n_tokens / seconds


def decode_matrices(model: Llama):
    """The matrices minillama multiplies by when decoding: the fused q|k|v and
    gate|up weights where use_decode_layout made them, then every other projection."""
    matrices, fused_members = [], set()
    for module in model.modules():
        fused = fused_weight(module) if getattr(module, "fused_projections", None) else None
        if fused is not None:
            matrices.append(fused)
            fused_members.update(id(getattr(module, n)) for n in module.fused_projections)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module) not in fused_members:
            matrices.append(module.weight.t())
    return matrices


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shape", choices=sorted(SHAPES), default="stories42M")
    p.add_argument("--skip_no_cache", action="store_true", help="skip the slow no-cache run")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype)

    torch.manual_seed(0)
    shape = SHAPES[args.shape]
    plain = Llama(LlamaConfig(**shape)).to(device=device, dtype=dtype).eval()  # the hand-written core alone
    model = copy.deepcopy(plain)
    prepare_for_decoding(speed_up(model))  # what the CLI runs (RunConfig.fast): minillama.fast
    sdpa_model = copy.deepcopy(plain)
    prepare_for_decoding(speed_up(sdpa_model, sdpa=True))
    hf = to_transformers(model)
    prompt = torch.randint(3, model.config.vocab_size, (1, args.prompt_len), device=device)
    N = args.new_tokens
    print(f"device {device} ({torch.get_num_threads()} threads), dtype {args.dtype}, {args.shape} shape "
          f"({model.num_parameters() / 1e6:.1f}M params), batch 1, prompt {args.prompt_len}, new tokens {N}, "
          f"torch {torch.__version__}")

    # the same function on both sides, or the speed comparison means nothing
    with torch.no_grad():
        ours = model(prompt)[0].float()
        theirs = hf(prompt).logits.float()
    max_diff = (ours - theirs).abs().max().item()
    tol = 1e-4 if dtype == torch.float32 else 5e-2 * ours.abs().max().item()
    print(f"logits max |minillama - transformers| = {max_diff:.2e} (tolerance {tol:.1e})")
    if not max_diff <= tol:
        sys.exit("logits differ: the weight conversion is wrong, timings would compare different models")

    engines = {
        "minillama (KV cache)": lambda: model.generate(prompt, N),
        "minillama (KV cache, --use_sdpa)": lambda: sdpa_model.generate(prompt, N),
        "minillama (KV cache, --no_fast)": lambda: plain.generate(prompt, N),
        "transformers generate": lambda: hf.generate(prompt, max_new_tokens=N, do_sample=False,
                                                     attention_mask=torch.ones_like(prompt)),
    }
    if not args.skip_no_cache:
        engines["minillama (no cache)"] = lambda: model.generate(prompt, N, use_cache=False)
    # Rounds interleave the engines (A B C, A B C, ...) and keep each one's best,
    # so a machine whose speed drifts during the run cannot favour one of them.
    rate, outputs = {}, {}
    with torch.no_grad():
        for name, fn in engines.items():  # warm-up: allocator, kernels, lazy init
            (fn if name != "minillama (no cache)" else (lambda: model.generate(prompt, 4, use_cache=False)))()
        for round_ in tqdm(range(args.repeats), desc="rounds (every engine)", leave=False):  # between timings
            for name, fn in engines.items():
                if "no cache" in name and round_ > 0:
                    continue  # slow; one run is enough to show the cache's effect
                seconds, out = best_time(fn, device, 1)
                assert out.shape[1] == args.prompt_len + N, f"{name} produced {out.shape[1] - args.prompt_len} tokens"
                rate[name], outputs[name] = max(rate.get(name, 0.0), N / seconds), out
    for name in engines:
        print(f"{name:36s} {rate[name]:8.1f} tokens/s")
    same = all(torch.equal(outputs["minillama (KV cache)"], o) for o in outputs.values())
    print(f"greedy tokens identical across engines: {same}")
    base = rate["minillama (KV cache)"]
    print(f"ratio minillama-cache / transformers: {base / rate['transformers generate']:.2f}x")
    print(f"ratio minillama-sdpa / transformers: {rate['minillama (KV cache, --use_sdpa)'] / rate['transformers generate']:.2f}x")
    print(f"ratio minillama-sdpa / minillama-cache: {rate['minillama (KV cache, --use_sdpa)'] / base:.2f}x")
    if "minillama (no cache)" in rate:
        print(f"ratio cache / no-cache: {base / rate['minillama (no cache)']:.2f}x")
    with torch.no_grad():
        floor = weight_floor(decode_matrices(model), N, device, args.repeats)
        hf_floor = weight_floor([m.weight.t() for m in hf.modules() if isinstance(m, torch.nn.Linear)],
                                N, device, args.repeats)
    print(f"weight products alone, minillama's layout: {floor:.1f} tokens/s (minillama reaches {base / floor:.0%}); "
          f"transformers' layout: {hf_floor:.1f} tokens/s (transformers reaches "
          f"{rate['transformers generate'] / hf_floor:.0%})")


if __name__ == "__main__":
    main()
