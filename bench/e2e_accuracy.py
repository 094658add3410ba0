"""E2E table-to-text with every method on one checkpoint, side by side with transformers + peft
on the same weights, data, batches and learning-rate schedule, in one run.

Rows (names for --methods):
    finetune, lora, prefix, ptuning2, prompt   minillama, through the task code in-process
                                               (minillama.tasks.e2e.run, as `run_llama.py --task e2e`
                                               runs it), configs built here directly (no argv)
    peft_finetune, peft_lora, peft_prefix      transformers' LlamaForCausalLM loaded from the same
                                               weights (minillama.formats.hf.save_hf_dir ->
                                               from_pretrained), adapted with peft

Settings shared by every row: the first --max_train_rows training rows, --epochs, --batch_size,
the linear decay of the lr to 0 (the paper's), the same batch order (minillama's training loop
`fit` with the same seed drives the transformers models too, so only the model and its
adaptation differ), the dev loss picking the best epoch, beam search (--beam_size, the paper's
5, length penalty 1) from `[bos] MR [bos]`, and the five official metrics on the unique MRs of
the test set (630 MRs).  Method settings: LoRA rank 4, alpha 1 on every projection, minillama's default
(peft: r=4, lora_alpha=1, q/k/v/o_proj and mlp gate/up/down_proj); prefix 10 tokens through a 512-wide MLP (peft: num_virtual_tokens=10,
prefix_projection=True, encoder_hidden_size=512); ptuning2 and prompt 10 tokens.  The lr of a
row is its method config's lr_for("e2e") (a peft row takes its minillama
counterpart's) unless --lr says otherwise.

How each side decodes:
  * minillama: `backbone.generate(..., beam_size=5)` (minillama/beam.py, batched with left
    padding through the KV cache, the prefix inside the cache);
  * peft_finetune, peft_lora: transformers' `generate(num_beams=5, length_penalty=1.0,
    early_stopping=True, do_sample=False)`, batched with left padding;
  * peft_prefix: not through `generate()`, but through peft's plain forward with no cache (every
    step re-reads the prompt and the tokens so far), by minillama's beam search (the same rules
    as transformers' beam search, tests/test_beam.py); prompts of equal length are batched
    together, so no padding is needed.  This is because a peer measured that with peft 0.21.2
    and transformers 5.23, generate() on a prefix-tuned model warns "Both `past_key_values` and
    `cache` are set" and silently drops the prefix (it writes the base model's text).  The bench
    measures that claim on the installed versions, on the first --check_mrs MRs (greedy,
    batched with left padding): how many of peft generate()'s outputs equal the base model's,
    how many equal the forward decode's, and how many of the forward decode's differ from the
    base model's.
  * For minillama's prefix-family rows it checks that the trained prefix changes what
    `generate` writes: the saved adapter reloaded onto a fresh model, against that model alone.

Examples (stories260K with its tok512 tokenizer; RMSNorm, as llama2.c and transformers use):

    python bench/e2e_accuracy.py --checkpoint ../shared/assets/llama2c/stories260K.bin \\
        --tokenizer ../shared/assets/llama2c/tok512.model --max_train_rows 20000 --epochs 1 --jobs 2
    # a learning-rate sweep scored on dev (the dev CSV decoded in place of test), no peft rows:
    python bench/e2e_accuracy.py ... --max_train_rows 2000 --eval_split dev --methods finetune,lora \\
        --lr finetune=1e-3,3e-3,1e-2 --lr lora=3e-3,1e-2,3e-2
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from minillama.metrics import METRIC_NAMES  # noqa: E402
from progress import run_all  # noqa: E402

MINILLAMA = ("finetune", "lora", "prefix", "ptuning2", "prompt")
PEFT = ("peft_finetune", "peft_lora", "peft_prefix")
PREFIX_FAMILY = ("prefix", "ptuning2", "prompt")
# minillama method -> (E2EConfig option, adapter settings)
SETTINGS = {"finetune": ("finetune", {}), "lora": ("lora", {"rank": 4, "alpha": 1.0}),
            "prefix": ("prefix", {"length": 10, "hidden": 512}), "ptuning2": ("prefix", {"length": 10}),
            "prompt": ("prefix", {"length": 10})}
PEFT_NOTE = ("peft_prefix is decoded through peft's plain forward with no cache (minillama's beam search, "
             "equal-length prompts batched, no padding), not generate(): a peer reported that peft 0.21.2 + "
             "transformers 5.23 generate() drops the prefix (warning 'Both `past_key_values` and `cache` are "
             "set'); the prefix checks measure that claim on the installed versions")


def data_dir(flag: Optional[str]) -> str:
    """--data_dir, or data/e2e with a fallback to the mirror's e2e folder."""
    if flag:
        return flag
    for d in (os.path.join(REPO, "data", "e2e"), os.path.join(REPO, "..", "shared", "assets", "e2e")):
        if os.path.isfile(os.path.join(d, "trainset.csv")):
            return d
    sys.exit("no E2E data in data/e2e or ../shared/assets/e2e: run ./setup.sh or pass --data_dir")


def first_mrs(src: str, dst: str, n: int) -> int:
    """The rows of src whose MR is among its first n distinct MRs, written to dst; returns
    how many MRs that is (all of them when n is 0)."""
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body, seen = rows[0], [], {}
    for row in rows[1:]:
        if row and (row[0] in seen or not n or len(seen) < n):
            seen.setdefault(row[0], None)
            body.append(row)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header] + body)
    return len(seen)


def method_of(name: str) -> str:
    """The minillama method a row stands beside: peft_lora -> lora."""
    return name[len("peft_"):] if name.startswith("peft_") else name


# -- one row -----------------------------------------------------------------------------------
def configs(job: dict):
    """(RunConfig, E2EConfig) of one row: the minillama run, or the shared settings of a peft row."""
    from minillama.adapters import make_config
    from minillama.runconfig import RunConfig
    from minillama.tasks.e2e import E2EConfig
    from minillama.train import TrainConfig
    option, settings = SETTINGS[method_of(job["name"])]
    settings = {**settings, **job.get("settings", {})}
    tag = job["name"] + "".join(f"-{k}{v}" for k, v in job.get("settings", {}).items()) + \
        (f"-lr{job['lr']:g}" if job["lr"] is not None else "")
    out = os.path.join(job["tmp"], tag)
    run = RunConfig(model_path=job["checkpoint"], tokenizer_path=job["tokenizer"], norm=job["norm"],
                    use_sdpa=job["use_sdpa"], device=job["device"], seed=job["seed"], progress=False)
    cfg = E2EConfig(option=option, method=make_config(method_of(job["name"]), **settings),
                    train=job["train"], dev=job["dev"], test=job["test"], max_train_rows=job["max_train_rows"],
                    training=TrainConfig(epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"]),
                    beam_size=job["beam_size"], test_out=f"{out}-test.txt", scores_out=f"{out}-scores.json",
                    save_adapter=f"{out}-adapter", log_jsonl=f"{out}-log.jsonl")
    return run, cfg, tag


def one_row(job: dict) -> dict:
    """Train and score one row in this process; its full log goes to <tmp>/<tag>.log."""
    from minillama.runconfig import seed_everything
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    run, cfg, tag = configs(job)
    seed_everything(run.seed)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = (peft_row if job["name"] in PEFT else minillama_row)(job, run, cfg)
    result.update(name=job["name"], lr=cfg.training.lr, settings=job.get("settings", {}),
                  seconds=time.perf_counter() - start)
    with open(os.path.join(job["tmp"], f"{tag}.log"), "w") as f:
        f.write(f"{run}\n{cfg}\n" + log.getvalue())
    return result


def minillama_row(job: dict, run, cfg) -> dict:
    from minillama.adapters import attach, load_adapters, parameter_counts
    from minillama.pairs_data import group_references, read_pairs
    from minillama.tasks import e2e
    scores = e2e.run(run, cfg)["test"]
    with open(cfg.log_jsonl) as f:
        epochs = [r["seconds"] for r in map(json.loads, f) if r["event"] == "epoch"]
    model, tokenizer = run.load()
    result = {"impl": "minillama", "scores": scores, "epoch_s": epochs,
              "trainable": parameter_counts(attach(model, cfg.method, tokenizer))["trainable"]}
    if method_of(job["name"]) in PREFIX_FAMILY and job["check_mrs"]:
        # Does the trained prefix change what generate writes?  The saved adapter on a fresh model
        # against that model alone (a prefix leaves its base untouched), greedy, on the first MRs.
        base, tokenizer = run.load()
        tuned, _ = load_adapters(base, [cfg.adapter_path], None, tokenizer)
        sources = [s for s, _ in group_references(read_pairs(cfg.test))][:job["check_mrs"]]
        result["check"] = prefix_check(tokenizer, sources, run, cfg, base, tuned.to(run.device))
    return result


def prefix_check(tokenizer, sources: List[str], run, cfg, base, tuned, plain=None) -> dict:
    """Greedy outputs on `sources`: how many of `tuned`'s differ from the base model's
    (`base`), and, for peft, how many of `plain`'s (peft's generate()) equal the base's and
    how many equal `tuned`'s (the forward decode)."""
    import dataclasses
    from minillama.tasks import e2e
    greedy = dataclasses.replace(cfg, beam_size=1)
    new = 64
    ref = e2e.decode(base.to(run.device), tokenizer, sources, greedy, new, run)
    out = e2e.decode(tuned, tokenizer, sources, greedy, new, run)
    check = {"mrs": len(sources), "tuned_differs_from_base": sum(a != b for a, b in zip(out, ref))}
    if plain is not None:
        plain_out = e2e.decode(plain, tokenizer, sources, greedy, new, run)
        check["generate_equals_base"] = sum(a == b for a, b in zip(plain_out, ref))
        check["generate_equals_forward"] = sum(a == b for a, b in zip(plain_out, out))
    return check


# -- transformers + peft ----------------------------------------------------------------------
class HFCausalLM(torch.nn.Module):
    """A transformers causal LM behind minillama's backbone interface, for the training loop
    (forward(ids, mask) -> (logits, hidden)) and for e2e.decode (generate(...) with
    minillama's arguments, run by transformers' own beam search)."""

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, input_ids, attention_mask=None, **_):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits, None

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens, eos_id=None, attention_mask=None, beam_size=1,
                 length_penalty=1.0):
        return self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                   max_new_tokens=max_new_tokens, num_beams=beam_size, do_sample=False,
                                   length_penalty=length_penalty, early_stopping=True, eos_token_id=eos_id,
                                   pad_token_id=self.pad_id)


class TokenHistory:
    """Stands in for a KV cache in minillama's beam search: it holds the tokens read so far
    ([rows, T]), so each step re-reads all of them; `reorder` picks each new beam's history."""

    def __init__(self):
        self.ids: Optional[torch.Tensor] = None

    def reorder(self, index: torch.Tensor):
        self.ids = self.ids[index]


class NoCacheDecoder(torch.nn.Module):
    """peft's prefix model decoded through its plain forward (no cache), for minillama's
    beam search: the backbone interface (new_cache, forward, input_room) over TokenHistory.
    `generate` groups the rows of a left-padded batch by prompt length, so each group has no
    padding, decodes each group, and returns the rows in minillama's layout (the padded prompt,
    then the new tokens, eos-filled)."""

    def __init__(self, peft_model, virtual_tokens: int):
        super().__init__()
        self.model = peft_model
        self.input_room = peft_model.config.max_position_embeddings - virtual_tokens

    def new_cache(self, batch: int, capacity: int = 0) -> TokenHistory:
        return TokenHistory()

    def forward(self, input_ids, attention_mask=None, *, cache: TokenHistory, last_only: bool = True):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("NoCacheDecoder reads unpadded rows only")
        cache.ids = input_ids if cache.ids is None else torch.cat([cache.ids, input_ids], dim=1)
        return self.model(input_ids=cache.ids, use_cache=False).logits[:, -1:], None

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens, eos_id=None, attention_mask=None, beam_size=1,
                 length_penalty=1.0):
        from minillama.core.beam import beam_search
        lengths = attention_mask.sum(dim=1)
        T = input_ids.shape[1]
        pieces = {}
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            prompts = input_ids[rows, T - n:]
            out = beam_search(self, prompts, max_new_tokens, beam_size, length_penalty, eos_id)
            for r, row in zip(rows.tolist(), out[:, n:]):
                pieces[r] = row
        width = max(len(p) for p in pieces.values())
        new = input_ids.new_full((len(input_ids), width), eos_id)
        for r, p in pieces.items():
            new[r, :len(p)] = p
        return torch.cat([input_ids, new], dim=1)


def hf_model(run, tmp: str, tag: str, model, tokenizer):
    """transformers' LlamaForCausalLM with the weights of minillama's `model` (float32; the
    same attention kind as minillama's: eager, or SDPA with --use_sdpa)."""
    from transformers import LlamaForCausalLM
    from minillama.formats.hf import save_hf_dir
    path = os.path.join(tmp, f"{tag}-hf")
    save_hf_dir(model, path, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    return LlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa" if run.use_sdpa else "eager",
                                            dtype=torch.float32).to(run.device)


def peft_adapted(name: str, hf):
    """The peft row's trainable model: the full transformers model, or peft's LoRA / prefix."""
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
    if name == "peft_finetune":
        return hf.requires_grad_(True)
    if name == "peft_lora":
        from minillama.adapters.lora_config import LoraConfig as OurLora
        from minillama.adapters.lora_peft import peft_target_modules
        return get_peft_model(hf, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=1, lora_dropout=0.0,
                                             target_modules=peft_target_modules(OurLora().targets)))
    return get_peft_model(hf, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=10,
                                                 prefix_projection=True, encoder_hidden_size=512))


def peft_row(job: dict, run, cfg) -> dict:
    """The peft row: the data e2e.run would build, minillama's training loop, e2e.decode and
    e2e.score, with transformers + peft as the model."""
    from minillama.lm_data import LMSplit
    from minillama.pairs_data import group_references
    from minillama.tasks import e2e
    from minillama.train import CausalLM, count_parameters, fit
    model, tokenizer = run.load()
    hf = hf_model(run, job["tmp"], job["name"], model, tokenizer)
    peft_model = peft_adapted(job["name"], hf)
    trainer = HFCausalLM(peft_model, tokenizer.pad_id)
    train, dev = (LMSplit.from_pairs(tokenizer, e2e.read_split(path, cfg, limit), path)
                  for path, limit in ((cfg.train, cfg.max_train_rows), (cfg.dev, None)))
    room = hf.config.max_position_embeddings - (10 if job["name"] == "peft_prefix" else 0)
    for split in (train, dev):
        e2e.fit_to_context(split, room)
    max_new = e2e.default_new_tokens(train)
    history = fit(trainer, train, dev, cfg.training, run, objective=CausalLM())
    trainable = count_parameters(trainer)[0]
    decoder = trainer if job["name"] != "peft_prefix" else NoCacheDecoder(peft_model, 10)
    grouped = group_references(e2e.read_split(cfg.test, cfg))
    sources, references = [s for s, _ in grouped], [r for _, r in grouped]
    outputs = e2e.decode(decoder, tokenizer, sources, cfg, max_new, run)
    with open(cfg.outputs["test"], "w", encoding="utf-8") as f:
        f.writelines(o + "\n" for o in outputs)
    result = {"impl": "peft", "scores": e2e.score(references, outputs, cfg), "epoch_s": [h.seconds for h in history],
              "trainable": trainable}
    if job["name"] == "peft_prefix" and job["check_mrs"]:
        base = HFCausalLM(hf_model(run, job["tmp"], "base", model, tokenizer), tokenizer.pad_id)
        result["check"] = prefix_check(tokenizer, sources[:job["check_mrs"]], run, cfg, base, decoder, trainer)
    return result


# -- shared with bench/e2e_prefix_length.py ------------------------------------------------------
def add_common_flags(p: argparse.ArgumentParser, max_train_rows: int):
    """The flags of the model, the data slices, training, decoding and the processes."""
    p.add_argument("--checkpoint", default="stories42M.pt")
    p.add_argument("--tokenizer", default=None, help="default: the model's own (RunConfig's default)")
    p.add_argument("--norm", default="rmsnorm", choices=["layernorm", "rmsnorm"],
                   help="rmsnorm (default): what llama2.c trained and transformers' Llama computes")
    p.add_argument("--data_dir", default=None, help="trainset.csv, devset.csv, testset_w_refs.csv "
                                                    "(default data/e2e, else ../shared/assets/e2e)")
    p.add_argument("--max_train_rows", type=int, default=max_train_rows, help="the first N training rows (0: all)")
    p.add_argument("--max_dev_mrs", type=int, default=0, help="the dev loss on the rows of the first N dev MRs (0: all)")
    p.add_argument("--max_eval_mrs", type=int, default=0, help="decode and score the first N MRs only (0: all)")
    p.add_argument("--eval_split", default="test", choices=["test", "dev"],
                   help="decode and score test (default) or dev (for choosing settings)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--beam_size", type=int, default=5)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--use_sdpa", action="store_true", help="torch's fused attention (on both sides)")
    p.add_argument("--use_gpu", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (default 1: on a busy shared CPU more threads than free cores "
                        "make each step many times slower)")
    p.add_argument("--keep", default=None, help="keep outputs, adapters and logs in this directory")


def common_job(args) -> tuple:
    """(the job fields every run shares, the number of MRs scored): the dev and evaluation
    slices written into the output directory."""
    from minillama.cli import choose_device
    d = data_dir(args.data_dir)
    tmp = args.keep or tempfile.mkdtemp(prefix="minillama-e2e-")
    os.makedirs(tmp, exist_ok=True)
    dev = os.path.join(tmp, "dev.csv")
    first_mrs(os.path.join(d, "devset.csv"), dev, args.max_dev_mrs)
    evaluated = os.path.join(tmp, f"eval-{args.eval_split}.csv")
    mrs = first_mrs(os.path.join(d, "testset_w_refs.csv" if args.eval_split == "test" else "devset.csv"),
                    evaluated, args.max_eval_mrs)
    common = dict(checkpoint=args.checkpoint, tokenizer=args.tokenizer, norm=args.norm, tmp=tmp,
                  train=os.path.join(d, "trainset.csv"), dev=dev, test=evaluated,
                  max_train_rows=args.max_train_rows or None, epochs=args.epochs, batch_size=args.batch_size,
                  beam_size=args.beam_size, seed=args.seed, use_sdpa=args.use_sdpa,
                  device=choose_device(args.use_gpu), threads=args.threads, check_mrs=getattr(args, "check_mrs", 0))
    print(f"{os.path.basename(args.checkpoint)} on E2E: first {args.max_train_rows or 'all'} training rows, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, linear lr decay, beam {args.beam_size}, "
          f"{args.eval_split} {mrs} MRs; {args.jobs} run(s) at a time, {args.threads} thread(s) each; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; outputs in {tmp}", flush=True)
    return common, mrs


def run_jobs(jobs: List[dict], n_jobs: int) -> List[dict]:
    """one_row of every job, n_jobs at a time, with a line as each begins and ends (bench/progress.py)."""
    return run_all(one_row, jobs, n_jobs, lambda job: f"{job['name']} {job.get('settings') or ''}",
                   lambda r: f"{r['name']:14s} {r.get('settings') or ''} lr {r['lr']:g}  "
                             f"BLEU {r['scores']['BLEU']:.4f}  {r['seconds']:7.1f} s")


# -- the table -----------------------------------------------------------------------------------
def parse_lrs(items: List[str]) -> Dict[str, List[float]]:
    """['finetune=1e-3,3e-3', ...] -> {'finetune': [1e-3, 3e-3]}."""
    out = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in MINILLAMA + PEFT or not values:
            sys.exit(f"--lr {item}: expected NAME=LR[,LR...] with NAME one of {', '.join(MINILLAMA + PEFT)}")
        out[name] = [float(v) for v in values.split(",")]
    return out


def describe_check(name: str, check: dict) -> str:
    n = check["mrs"]
    line = f"  {name:14s} trained prefix changes the greedy output on {check['tuned_differs_from_base']}/{n} MRs"
    if "generate_equals_base" in check:
        line += (f" (decoded through peft's forward);\n{'':17s}peft generate() writes the base model's text on "
                 f"{check['generate_equals_base']}/{n}, the forward decode's on {check['generate_equals_forward']}/{n}")
    return line


def print_table(results: List[dict], split: str):
    head = f"{'method':14s} {'impl':9s} {'lr':>7s} {'trainable':>10s} {'train s/ep':>10s} " + \
           " ".join(f"{m:>7s}" for m in METRIC_NAMES)
    print(f"\n{split} scores ({results[0]['mrs']} MRs)\n{head}")
    for r in results:
        s = r["scores"]
        epoch = sum(r["epoch_s"]) / len(r["epoch_s"])
        print(f"{r['name']:14s} {r['impl']:9s} {r['lr']:7.0e} {r['trainable']:10,d} {epoch:10.1f} " +
              " ".join(f"{s[m]:7.4f}" if s.get(m) is not None else f"{'-':>7s}" for m in METRIC_NAMES))


def print_best(results: List[dict]):
    """The best lr of each method that ran with several, by BLEU."""
    for name in dict.fromkeys(r["name"] for r in results):
        rows = [r for r in results if r["name"] == name]
        if len(rows) > 1:
            best = max(rows, key=lambda r: r["scores"]["BLEU"])
            print(f"best lr for {name}: {best['lr']:g} (BLEU {best['scores']['BLEU']:.4f}; tried "
                  + ", ".join(f"{r['lr']:g}" for r in rows) + ")")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(p, max_train_rows=20000)
    p.add_argument("--methods", default=",".join(MINILLAMA + PEFT), help="comma-separated, from: "
                                                                          + ", ".join(MINILLAMA + PEFT))
    p.add_argument("--lr", action="append", default=[], metavar="NAME=LR[,LR...]",
                   help="the lr(s) of a row (several: one run each); default: its method's lr_for('e2e')")
    p.add_argument("--check_mrs", type=int, default=20,
                   help="MRs of the prefix checks (generate with the trained prefix vs the base; 0: none)")
    p.add_argument("--json", default=None, help="write every row's result here")
    args = p.parse_args()
    names = args.methods.split(",")
    for n in names:
        if n not in MINILLAMA + PEFT:
            sys.exit(f"unknown method {n!r}; choose from {', '.join(MINILLAMA + PEFT)}")
    lrs = parse_lrs(args.lr)
    from minillama.adapters import REGISTRY
    common, mrs = common_job(args)
    jobs = [dict(common, name=n, lr=lr) for n in names
            for lr in lrs.get(n, [REGISTRY[method_of(n)][0].lr_for("e2e")] if n in PEFT else [None])]
    print(f"{len(jobs)} runs", flush=True)
    if any(n == "peft_prefix" for n in names):
        print(f"note: {PEFT_NOTE}", flush=True)
    start = time.perf_counter()
    results = run_jobs(jobs, args.jobs)
    wall = time.perf_counter() - start
    for r in results:
        r["mrs"] = mrs
    print_table(results, args.eval_split)
    print_best(results)
    checks = [(r["name"], r["check"]) for r in results if "check" in r]
    if checks:
        print(f"\nprefix checks (greedy, first {args.check_mrs} {args.eval_split} MRs, against the base model):")
        for name, check in checks:
            print(describe_check(name, check))
    if any(r["name"] == "peft_prefix" for r in results):
        print(f"note: {PEFT_NOTE}")
    print(f"wall time {wall:.0f} s for {len(results)} runs; train s/ep: the training steps of one epoch "
          f"({args.jobs} run(s) at a time on {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "eval_mrs": mrs, "wall_s": wall, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
