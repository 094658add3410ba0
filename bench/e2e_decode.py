#!/usr/bin/env python3
"""E2E table-to-text beam search: minillama vs transformers, same weights, same batches, same tokens.

    .venv/bin/python bench/e2e_decode.py                      # all 630 test MRs, both models
    .venv/bin/python bench/e2e_decode.py --first 64 --models 260k

Every unique meaning representation of the E2E test set (first-appearance order)
becomes the prompt  [bos] MR tokens [bos]  (Li & Liang's layout for table-to-text),
left-padded in batches of --batch_size, and is decoded by beam search (beam 5,
length penalty 1) until eos or --max_new_tokens:
  minillama     model.generate(ids, N, beam_size=5, eos_id=eos, attention_mask=mask)
  transformers  generate(num_beams=5, early_stopping=True, do_sample=False), on the
                same weights written by save_hf_dir and read by LlamaForCausalLM.
The outputs must be identical, batch by batch (the script stops if not).

Models: 260k, the pretrained stories260K (tok512 tokenizer; it never saw an MR,
so what it writes is nonsense, but its hypotheses do end at eos, at different
lengths); 42m, a stories42M-shaped random model (dim 512, 8 layers, 8 heads, vocab
32000, Llama 2 tokenizer), which rarely says eos, so nearly every batch decodes
--max_new_tokens tokens.  Batches alternate which engine runs first (the machine's
speed drifts); the times are sums over all batches.  On a machine shared with other
work wall time swings, so CPU time (all threads) and the median of the per-batch ratios
(both engines ran the batch back to back) are printed too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.formats.hf import save_hf_dir  # noqa: E402
from minillama.loading import load_model  # noqa: E402
from minillama.fast import prepare_for_decoding, speed_up  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.pairs_data import group_references, read_pairs  # noqa: E402
from minillama.tokenizer import load_tokenizer  # noqa: E402

ASSETS = os.environ.get("MINILLAMA_ASSETS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "..", "..", "shared", "assets")
STORIES42M_SHAPE = dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024,
                        multiple_of=32, norm="rmsnorm")


def unique_mrs(path: str):
    """The test set's meaning representations, each once, in order of first appearance."""
    return [mr for mr, _ in group_references(read_pairs(path))]


def build(name: str):
    """(minillama model, tokenizer) for --models name."""
    if name == "260k":
        model = load_model(os.path.join(ASSETS, "llama2c", "stories260K.bin"), norm="rmsnorm", fast=True)
        return prepare_for_decoding(model.eval()), load_tokenizer(os.path.join(ASSETS, "llama2c", "tok512.model"))
    torch.manual_seed(0)
    model = prepare_for_decoding(speed_up(Llama(LlamaConfig(**STORIES42M_SHAPE)).eval()))  # as the CLI decodes
    return model, load_tokenizer(os.path.join(ASSETS, "llama2", "tokenizer.model"))


def to_transformers(model: Llama):
    """transformers' LlamaForCausalLM with model's weights (through a Hugging Face directory)."""
    from transformers import LlamaForCausalLM, logging

    logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_hf_dir(model, path)
        return LlamaForCausalLM.from_pretrained(path).eval()


def batches(tokenizer, mrs, batch_size: int):
    """(ids [B, T], mask [B, T]): prompts [bos] MR [bos], left-padded."""
    prompts = [[tokenizer.bos_id] + tokenizer.encode(mr, bos=False) + [tokenizer.bos_id] for mr in mrs]
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        T = max(map(len, chunk))
        ids = torch.tensor([[tokenizer.pad_id] * (T - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in chunk])
        yield ids, mask


class Stopwatch:
    """Wraps a module's forward and sums the seconds spent in it."""

    def __init__(self, module):
        self.seconds, self.forward = 0.0, module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.forward(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out


def run_model(name: str, mrs, args):
    model, tokenizer = build(name)
    hf = to_transformers(model)
    eos, k, N = tokenizer.eos_id, args.beam_size, args.max_new_tokens
    in_model = Stopwatch(model)  # how much of minillama's time the model itself takes
    engines = {
        "minillama": lambda ids, mask: model.generate(ids, N, eos_id=eos, attention_mask=mask, beam_size=k),
        "transformers": lambda ids, mask: hf.generate(ids, attention_mask=mask, max_new_tokens=N, num_beams=k,
                                                      early_stopping=True, do_sample=False, eos_token_id=eos,
                                                      pad_token_id=tokenizer.pad_id),
    }
    data = list(batches(tokenizer, mrs, args.batch_size))
    with torch.no_grad():
        for fn in engines.values():  # warm-up: allocator, lazy init, the decode layout
            fn(*data[0])
    seconds, cpu_seconds, ratios = dict.fromkeys(engines, 0.0), dict.fromkeys(engines, 0.0), []
    in_model.seconds = 0.0
    new_tokens = 0
    for round_ in range(args.rounds):
        # the bar updates between timed calls, so it costs the timings nothing
        for i, (ids, mask) in enumerate(tqdm(data, desc=f"{name} round {round_ + 1}/{args.rounds}", leave=False)):
            order = list(engines) if (i + round_) % 2 == 0 else list(engines)[::-1]
            outputs, batch_seconds = {}, {}
            for engine in order:
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    outputs[engine] = engines[engine](ids, mask)
                batch_seconds[engine] = time.perf_counter() - t0
                seconds[engine] += batch_seconds[engine]
                cpu_seconds[engine] += time.process_time() - c0
            ratios.append(batch_seconds["transformers"] / batch_seconds["minillama"])
            if not torch.equal(outputs["minillama"], outputs["transformers"]):
                sys.exit(f"{name}: batch {i} differs between minillama and transformers")
            if round_ == 0:
                new_tokens += int((outputs["minillama"][:, ids.shape[1]:] != eos).sum())
    example = tokenizer.decode([t for t in outputs["minillama"][0, data[-1][0].shape[1]:].tolist() if t != eos])
    print(f"{name}: {model.num_parameters() / 1e6:.2f}M params, {len(mrs)} MRs in {len(data)} batches, "
          f"prompt tokens {int(sum(m.sum() for _, m in data)) / len(mrs):.1f} on average, "
          f"best hypotheses {new_tokens / len(mrs):.1f} tokens on average; outputs identical")
    print(f"  e.g. {example[:100]!r}")
    for engine, s in seconds.items():
        print(f"  {engine:13s} {s / args.rounds:8.2f} s  ({len(mrs) * args.rounds / s:6.1f} MRs/s), "
              f"CPU time {cpu_seconds[engine] / args.rounds:8.2f} s")
    print(f"  ratio transformers / minillama: {seconds['transformers'] / seconds['minillama']:.2f}x wall time, "
          f"{cpu_seconds['transformers'] / cpu_seconds['minillama']:.2f}x CPU time, "
          f"{statistics.median(ratios):.2f}x median over batches (minillama spends "
          f"{in_model.seconds / seconds['minillama']:.0%} of its wall time in the model's forward, "
          f"the rest choosing beams and reordering the cache)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", type=int, default=None, help="only the first N unique MRs (default: all 630)")
    p.add_argument("--batch_size", type=int, default=10, help="MRs per batch (each becomes beam_size rows)")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--beam_size", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--models", default="260k,42m", help="comma-separated: 260k, 42m")
    p.add_argument("--rounds", type=int, default=1, help="passes over the data (times are averaged)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mrs = unique_mrs(os.path.join(ASSETS, "e2e", "testset_w_refs.csv"))[: args.first]
    import transformers
    print(f"beam {args.beam_size}, length penalty 1.0, early stopping, max_new_tokens {args.max_new_tokens}, "
          f"batch {args.batch_size} MRs, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    for name in args.models.split(","):
        run_model(name.strip(), mrs, args)


if __name__ == "__main__":
    main()
