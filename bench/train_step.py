"""Seconds per training step and peak memory: finetune vs LoRA (and whatever
else is registered in METHODS) on a stories42M-shaped model with random weights.

Scenarios (the course's batch sizes; sequence lengths are the padded width of
a typical batch: SST sentences have 27 tokens on average, p99 61, so a batch
of 80 pads to about 64; CFIMDB reviews 236 on average, p90 382, p99 499, max
585, so a batch of 10 pads to about 512):
    sst     batch 80, 64 tokens   (the course's finetune SST setting)
    cfimdb  batch 10, 512 tokens  (the course's LoRA CFIMDB setting)
Every method runs in every scenario, so each ratio compares like with like.

The model uses RMSNorm (as the stories checkpoints and transformers' Llama do;
--norm layernorm for the course's default), so the peft rows compare the same
computation, and peft's transformers model uses the same kind of attention as
minillama's: eager (softmax(QK^T/sqrt(d))V written out) by default, torch's
fused SDPA with --use_sdpa.  --peft_attn sdpa gives peft transformers' default
(SDPA) whatever minillama uses: each side's default then.

Each (method, scenario) runs in its own subprocess, so peak memory is that
run's alone: on CPU the growth of ru_maxrss over the process's size once the
model is built (optimizer state, activations, gradients); on CUDA
torch.cuda.max_memory_allocated over the same baseline.

    python bench/train_step.py --device cpu --steps 2 --rounds 3
    python bench/train_step.py --device cuda --steps 10
    python bench/train_step.py --paired peft_prefix/ptuning2 --paired prefix/finetune --steps 6

--paired NUM/DEN builds both methods in one process and alternates their steps,
printing the median of the per-pair time ratios: steadier on a machine whose
speed drifts from minute to minute than a ratio of two separate runs.

--rounds R runs every (method, scenario) R times, interleaved (all of round 1,
then all of round 2, ...), and keeps each one's fastest: a machine whose speed
drifts during the run then cannot favour whichever method ran at a quiet moment.

To add a method, register a builder in METHODS: (model, num_labels, args) ->
classifier module with forward(input_ids, attention_mask) -> scores [B, K]
and requires_grad set on what trains.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minillama.core.config import LlamaConfig  # noqa: E402
from minillama.fast import speed_up  # noqa: E402
from minillama.adapters import inject_lora  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.heads import HeadClassifier  # noqa: E402
from minillama.train import count_parameters, make_optimizer, TrainConfig  # noqa: E402
from progress import Runs  # noqa: E402  (bench/, this script's folder)

STORIES42M = dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, multiple_of=32,
                  max_seq_len=1024)
SCENARIOS = {"sst": (80, 64), "cfimdb": (10, 512)}  # name -> (batch, tokens)


def build_finetune(model, num_labels, args):
    model.requires_grad_(True)
    return HeadClassifier(model, model.config.dim, num_labels, dropout=0.3)


def build_lora(model, num_labels, args):
    inject_lora(model, ("wq", "wv"), rank=4, alpha=1.0)
    return HeadClassifier(model, model.config.dim, num_labels, dropout=0.3)


def prefix_builder(mode):
    def build(model, num_labels, args):
        from minillama.adapters import attach, make_config  # prefix: the paper's 512-wide MLP, its default
        return HeadClassifier(attach(model, make_config(mode, length=10)), model.config.dim, num_labels,
                              dropout=0.3)
    return build


class PeftPrefixClassifier(torch.nn.Module):
    """peft prefix tuning on a transformers LlamaForCausalLM of the same shape, with the
    same classification loss: a head on the last token's final hidden state.  logits_to_keep=1
    spares the [B, T, vocab] projection, as minillama's last_only does."""

    def __init__(self, num_labels, projection: bool, attn_implementation: str):
        super().__init__()
        from peft import PrefixTuningConfig, TaskType, get_peft_model
        from transformers import LlamaConfig as HFConfig, LlamaForCausalLM
        c = LlamaConfig(**STORIES42M)
        hf = LlamaForCausalLM(HFConfig(hidden_size=c.dim, intermediate_size=c.hidden_dim,
                                       num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                                       num_key_value_heads=c.n_kv_heads, vocab_size=c.vocab_size,
                                       max_position_embeddings=c.max_seq_len, tie_word_embeddings=False,
                                       attn_implementation=attn_implementation))
        cfg = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=10,
                                 prefix_projection=projection, encoder_hidden_size=512)
        self.model = get_peft_model(hf, cfg)
        self.head = torch.nn.Linear(c.dim, num_labels)
        self.dropout = torch.nn.Dropout(0.3)
        self.attn = hf.config._attn_implementation

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                         logits_to_keep=1)
        return self.head(self.dropout(out.hidden_states[-1][:, -1]))  # the bench's rows are unpadded


def peft_attention(args) -> str:
    """transformers' attention: --peft_attn, or by default the same kind as minillama's in this run."""
    if args.peft_attn != "same":
        return args.peft_attn
    return "sdpa" if args.use_sdpa else "eager"


# name -> (builder, lr).  prefix = Li & Liang with the MLP reparameterization (as minillama trains it);
# peft_prefix = peft's PrefixTuningConfig default (prefix_projection=False: keys/values trained directly,
# the same computation as ptuning2); peft_prefix_proj = prefix_projection=True (an MLP of width 512, as prefix).
METHODS = {"finetune": (build_finetune, 2e-5), "lora": (build_lora, 2e-5),
           "prefix": (prefix_builder("prefix"), 1e-2), "prompt": (prefix_builder("prompt"), 1e-2),
           "ptuning2": (prefix_builder("ptuning2"), 1e-2),
           "peft_prefix": (lambda model, k, args: PeftPrefixClassifier(k, False, peft_attention(args)), 1e-2),
           "peft_prefix_proj": (lambda model, k, args: PeftPrefixClassifier(k, True, peft_attention(args)), 1e-2)}
# ratios printed at the end: (numerator, denominator, target)
TARGETS = [("prefix", "finetune", "<= 0.67"), ("ptuning2", "finetune", "<= 0.67"), ("prompt", "finetune", None),
           ("peft_prefix", "ptuning2", ">= 1.2"), ("peft_prefix_proj", "prefix", ">= 1.2")]


def max_rss_bytes() -> int:
    """Peak resident set of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_mark(device: torch.device) -> int:
    """Where peak memory is counted from: CUDA's allocated bytes (peak statistics reset), or
    this process's peak RSS so far."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return max_rss_bytes()


def peak_since(device: torch.device, mark: int) -> int:
    """Peak memory growth in bytes since memory_mark returned `mark`."""
    return (torch.cuda.max_memory_allocated() if device.type == "cuda" else max_rss_bytes()) - mark


def build_step(method: str, scenario: str, args):
    """(step, info): one training step of method on scenario's random batch, and its sizes."""
    device = torch.device(args.device)
    batch, tokens = SCENARIOS[scenario]
    batch, tokens = args.batch or batch, args.seq or tokens
    num_labels = 5 if scenario == "sst" else 2
    torch.manual_seed(0)
    model = None
    if not method.startswith("peft"):  # peft builds its own transformers model
        model = Llama(LlamaConfig(**STORIES42M, norm=args.norm)).to(device)
        speed_up(model, sdpa=args.use_sdpa)  # what the CLI trains with (RunConfig.fast)
    builder, lr = METHODS[method]
    clf = builder(model, num_labels, args).to(device).train()
    trainable, total = count_parameters(clf)
    opt = make_optimizer(clf, TrainConfig(lr=lr))
    ids = torch.randint(3, STORIES42M["vocab_size"], (batch, tokens), device=device)
    mask = torch.ones(batch, tokens, dtype=torch.long, device=device)
    labels = torch.randint(0, num_labels, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            scores = clf(ids, mask)
        torch.nn.functional.cross_entropy(scores.float(), labels).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    info = dict(method=method, scenario=scenario, batch=batch, tokens=tokens, trainable=trainable, total=total,
                attn=getattr(clf, "attn", "minillama"))
    return step, info


def measure(method: str, scenario: str, args) -> dict:
    """Runs in a fresh process: build, warm up, time args.steps steps."""
    device = torch.device(args.device)
    step, info = build_step(method, scenario, args)
    base = memory_mark(device)
    step()  # warm-up: allocates optimizer state and gradients, as every later step reuses
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    return dict(info, seconds=seconds, peak_mib=peak_since(device, base) / 2**20)


def measure_pair(num: str, den: str, scenario: str, args) -> dict:
    """Both methods in one process, steps alternating (num, den, num, den, ...): a machine
    whose speed drifts slows both alike, so the median of the per-pair ratios is steadier
    than a ratio of separate runs.  Time only (peak memory needs a process each)."""
    (step_a, _), (step_b, info) = build_step(num, scenario, args), build_step(den, scenario, args)
    step_a(), step_b()  # warm-up
    ratios, best = [], [float("inf"), float("inf")]
    for _ in range(args.steps):
        seconds = []
        for i, step in enumerate((step_a, step_b)):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
            best[i] = min(best[i], seconds[-1])
        ratios.append(seconds[0] / seconds[1])
    return dict(num=num, den=den, scenario=scenario, batch=info["batch"], tokens=info["tokens"],
                median_ratio=statistics.median(ratios), min_ratio=min(ratios), max_ratio=max(ratios),
                best_num=best[0], best_den=best[1])


def run_pairs(args, scenarios):
    """--paired NUM/DEN ...: one process per (pair, scenario); prints the median per-pair ratio."""
    runs = Runs(len(args.paired) * len(scenarios))
    for pair in args.paired:
        num, _, den = pair.partition("/")
        for scenario in scenarios:
            runs.begin(f"{scenario} {num}/{den}")
            cmd = child_command(args, ["--child_pair", num, den, scenario])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            print(f"{scenario:7s} batch {r['batch']:3d} x {r['tokens']:4d}  {num}/{den}  time x{r['median_ratio']:.2f} "
                  f"(median of {args.steps} alternating pairs; range {r['min_ratio']:.2f}-{r['max_ratio']:.2f}; "
                  f"fastest steps {r['best_num']:.3f} / {r['best_den']:.3f} s)", flush=True)
            runs.done(f"{scenario} {num}/{den}")


def child_command(args, what):
    """This script, in a fresh process, with this run's settings."""
    return [sys.executable, os.path.abspath(__file__), *what, "--device", args.device, "--steps", str(args.steps),
            "--norm", args.norm, "--peft_attn", args.peft_attn] + \
        (["--bf16"] if args.bf16 else []) + (["--use_sdpa"] if args.use_sdpa else []) + \
        (["--batch", str(args.batch)] if args.batch else []) + (["--seq", str(args.seq)] if args.seq else []) + \
        (["--threads", str(args.threads)] if args.threads else [])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--use_sdpa", action="store_true",
                   help="minillama models (and peft's transformers model) use torch's fused attention")
    p.add_argument("--peft_attn", choices=["same", "eager", "sdpa"], default="same",
                   help="transformers' attention for the peft rows (same: the kind minillama uses; sdpa is "
                        "transformers' own default, so --peft_attn sdpa compares each side's default)")
    p.add_argument("--norm", choices=["rmsnorm", "layernorm"], default="rmsnorm",
                   help="minillama's norm (transformers' Llama has RMSNorm)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; the fastest of each is kept")
    p.add_argument("--batch", type=int, default=None, help="override every scenario's batch size")
    p.add_argument("--seq", type=int, default=None, help="override every scenario's sequence length")
    p.add_argument("--paired", action="append", default=[], metavar="NUM/DEN",
                   help="time NUM against DEN in one process, steps alternating; print the median ratio "
                        "(repeatable; instead of the table)")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "SCENARIO"), help=argparse.SUPPRESS)
    p.add_argument("--child_pair", nargs=3, metavar=("NUM", "DEN", "SCENARIO"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(*args.child, args)))
        return
    if args.child_pair:
        print(json.dumps(measure_pair(*args.child_pair, args)))
        return
    methods, scenarios = args.methods.split(","), args.scenarios.split(",")
    print(f"device {args.device}{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}, "
          f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
          f"{args.steps} timed steps x {args.rounds} rounds, bf16 {args.bf16}; stories42M shape ({args.norm}), "
          f"random weights, minillama attention {'sdpa' if args.use_sdpa else 'hand-written'}, "
          f"peft (transformers) attention {peft_attention(args)}")
    if args.paired:
        run_pairs(args, scenarios)
        return
    rows = {}
    runs = Runs(args.rounds * len(scenarios) * len(methods))
    for round_ in range(args.rounds):
        for scenario in scenarios:
            for method in methods:
                runs.begin(f"round {round_ + 1}/{args.rounds}: {scenario} {method}")
                cmd = child_command(args, ["--child", method, scenario])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                runs.done(f"round {round_ + 1}/{args.rounds}: {scenario} {method} {r['seconds']:.3f} s/step")
                best = rows.get((method, scenario))
                if best is None or r["seconds"] < best["seconds"]:
                    rows[method, scenario] = r
    for scenario in scenarios:
        for method in methods:
            r = rows[method, scenario]
            print(f"{scenario:7s} batch {r['batch']:3d} x {r['tokens']:4d} tokens  {method:16s} "
                  f"trainable {r['trainable']:>11,} ({100 * r['trainable'] / r['total']:7.3f}%)  "
                  f"{r['seconds']:8.3f} s/step  peak +{r['peak_mib']:8.1f} MiB")
    base = methods[0]
    for scenario in scenarios:
        for method in methods[1:]:
            a, b = rows[method, scenario], rows[base, scenario]
            print(f"{scenario}: {method}/{base}  time x{a['seconds'] / b['seconds']:.2f}  "
                  f"peak memory x{a['peak_mib'] / max(b['peak_mib'], 1e-9):.2f}")
    for num, den, target in TARGETS:
        for scenario in scenarios:
            if (num, scenario) in rows and (den, scenario) in rows:
                a, b = rows[num, scenario], rows[den, scenario]
                note = f"  (target {target})" if target else ""
                print(f"{scenario}: {num}/{den}  time x{a['seconds'] / b['seconds']:.2f}  "
                      f"peak memory x{a['peak_mib'] / max(b['peak_mib'], 1e-9):.2f}{note}")
    if any(m.startswith("peft") for m in methods):
        print("peft: PrefixTuningConfig(task_type=CAUSAL_LM, num_virtual_tokens=10); peft_prefix has "
              "prefix_projection=False (peft's default), peft_prefix_proj has prefix_projection=True, "
              "encoder_hidden_size=512; transformers attention: "
              + str(rows.get(("peft_prefix", scenarios[0]), {}).get("attn", "?")))
    if "sst" in scenarios and "cfimdb" in scenarios and {"finetune", "lora"} <= set(methods):
        a, b = rows["lora", "cfimdb"], rows["finetune", "sst"]
        print(f"course settings: lora CFIMDB (10x512) / finetune SST (80x64)  time x{a['seconds'] / b['seconds']:.2f}  "
              f"peak memory x{a['peak_mib'] / max(b['peak_mib'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
