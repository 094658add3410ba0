"""`run_llama.py --option finetune | lora | prefix --task e2e`: conditional generation
(table-to-text), trained and decoded the way Li & Liang's prefix-tuning paper does E2E.

Any CSV with a source and a target column works (`--source_column`, `--target_column`;
E2E's `mr`/`ref` are the defaults), so a user's own table-to-text or summarisation pairs
need no code.  Each training row is one sequence `[bos] SOURCE [bos] TARGET [eos]` whose
loss reads the target tokens and the eos only (minillama/lm_data.py), through the shared
training loop with the CausalLM objective; the dev loss picks the best epoch.  Then every
unique test source is decoded (beam search by default, the paper's 5 beams), and the
outputs are scored against all of that source's references with the official E2E
metrics (minillama/metrics.py).

Outputs: `--test_out` one generation per unique test source in the file's order (newlines
inside a generation become spaces; an empty one stays an empty line), the five metrics as
a table on stdout and in a JSON report (`--scores_out`); `--dev_out` likewise on dev.
A source whose prompt leaves fewer than max_new_tokens positions in the model's context is
decoded in a batch of its own length (no other row loses tokens to it) and named in one
note on stderr and in the report's `short_of_room`.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ..adapters import AdapterConfig, FullConfig, attach, load_adapters, save_adapter
from ..adapters.adapterhub_format import check_adapterhub_dir, check_adapterhub_exportable, export_adapterhub_for_task
from ..adapters.registry import OUTPUT_WORDS, trainers
from ..adapters.io import check_adapter_sources, check_lm_adapters, check_saved_adapterhub_exportable
from ..adapters.peft_format import check_export_dir, export_for_task
from ..curves import curves_path, plot_curves
from ..fast import prepare_for_decoding
from ..data import pad_left
from ..distributed import is_main
from ..errors import MinillamaError
from ..files import atomic_write_group, check_all_writable, contents, check_distinct_paths, resolve_repo_path
from ..flags import flag, same_flag
from ..lm_data import LMSplit, prompt_ids
from ..metrics import e2e_scores, format_scores, require_java
from ..pairs_data import DEFAULT_SOURCE_COLUMN, DEFAULT_TARGET_COLUMN, group_references, read_pairs
from ..resume import data_identity, resolved
from ..runconfig import RunConfig
from ..runlog import RunLog
from ..core.decoding import strip_after_stop
from ..train import CausalLM, TrainConfig, autocast, describe_trainable, fit



@dataclass
class E2EConfig:
    option: str = "finetune"                 # names the default output files
    method: AdapterConfig = field(default_factory=FullConfig)
    train: str = same_flag("data/e2e/trainset.csv", "--train", readers="e2e_train")
    dev: str = same_flag("data/e2e/devset.csv", "--dev", readers="e2e")
    test: str = same_flag("data/e2e/testset_w_refs.csv", "--test", readers="e2e")
    source_column: str = flag(DEFAULT_SOURCE_COLUMN, "--source_column", readers="e2e",
                              help="CSV column of the source (default {default})")
    target_column: str = flag(DEFAULT_TARGET_COLUMN, "--target_column", readers="e2e",
                              help="CSV column of the target (default {default})")
    max_train_rows: Optional[int] = flag(None, "--max_train_rows", readers="e2e_train", type=int,
                                         help="train on the first N rows only")
    # None: the method's lr_for("e2e"), linear decay (the paper's); batch 10 (the paper's)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=10))
    beam_size: int = flag(5, "--beam_size", readers="e2e", help="beams (1 = greedy; default {default})")
    length_penalty: float = flag(1.0, "--length_penalty", readers="e2e",
                                 help="beam hypotheses scored sum log p / length ** this (default {default})")
    max_new_tokens: Optional[int] = same_flag(None, "--max_new_tokens", readers="e2e")  # None: longest target + eos
    test_out: Optional[str] = same_flag(None, "--test_out", readers="e2e")  # None: e2e-test-<word>-output.txt
    dev_out: Optional[str] = same_flag(None, "--dev_out", readers="e2e")    # dev is decoded only when asked
    scores_out: Optional[str] = flag(None, "--scores_out", readers="e2e",
                                     help="JSON report of the five metrics (default <test_out without .txt>-scores.json)")
    no_java: bool = flag(False, "--no_java", readers="e2e",
                         help="score BLEU and NIST only (METEOR, ROUGE_L, CIDEr need Java)")
    save_adapter: Optional[str] = same_flag(None, "--save_adapter", readers="e2e_save")  # None: e2e-<method>-adapter
    load_adapter: Optional[List[str]] = same_flag(None, "--load_adapter", readers="adapters")  # decode, no training
    interpolate: Optional[float] = same_flag(None, "--interpolate", readers="adapters")
    export_peft: Optional[str] = same_flag(None, "--export_peft", readers="export")
    export_adapterhub: Optional[str] = same_flag(None, "--export_adapterhub", readers="export_adapterhub")
    log_jsonl: Optional[str] = same_flag(None, "--log_jsonl", readers="log")
    wandb: bool = same_flag(False, "--wandb", readers="log")

    def __post_init__(self):
        if self.option not in trainers("e2e"):
            raise MinillamaError(f"--task e2e trains --option {' or '.join(trainers('e2e'))}, not {self.option}")
        if not isinstance(self.beam_size, int) or self.beam_size <= 0:
            raise MinillamaError(f"--beam_size must be a positive integer (1 = greedy), got {self.beam_size}")
        if not abs(self.length_penalty) < float("inf"):
            raise MinillamaError(f"--length_penalty must be a finite number, got {self.length_penalty}")
        for name, value in (("--max_new_tokens", self.max_new_tokens), ("--max_train_rows", self.max_train_rows)):
            if value is not None and value <= 0:
                raise MinillamaError(f"{name} must be a positive integer, got {value}")
        check_adapter_sources(self.load_adapter, self.interpolate)
        if self.export_peft and self.option == "finetune" and not self.load_adapter:
            raise MinillamaError("--export_peft: --option finetune trains no adapter "
                                 "(use --option lora or prefix, or --load_adapter an adapter to convert)")
        if self.export_adapterhub and not self.load_adapter:  # decided now, not after the training
            check_adapterhub_exportable(self.method.method)
        self.training = self.training.with_lr(self.method.lr_for("e2e"))
        self.training = self.training.with_schedule("linear")

    @property
    def trains(self) -> bool:
        return not self.load_adapter

    @property
    def outputs(self) -> Dict[str, Optional[str]]:
        test = self.test_out or f"e2e-test-{OUTPUT_WORDS[self.option]}-output.txt"
        scores = self.scores_out or (test[:-4] if test.endswith(".txt") else test) + "-scores.json"
        return {"test": test, "dev": self.dev_out, "scores": scores}

    @property
    def adapter_path(self) -> Optional[str]:
        if not self.trains or not self.method.has_adapter_file:
            return None
        return self.save_adapter or f"e2e-{self.method.method}-adapter"


# -- data -------------------------------------------------------------------------------------
def read_split(path: str, cfg: E2EConfig, limit: Optional[int] = None):
    pairs = read_pairs(resolve_repo_path(path), cfg.source_column, cfg.target_column)
    return pairs[:limit] if limit else pairs


def check_sources_fit(pairs, tokenizer, room: int, path: str):
    """An MR whose prompt leaves no room for a single generated token is a user mistake."""
    for p in pairs:
        n = len(prompt_ids(tokenizer, p.source))
        if n >= room:
            raise MinillamaError(f"{path}:{p.line}: the source is {n} tokens with its two bos, the model's "
                                 f"context leaves {room}: shorten it or use a model with a longer context")


def fit_to_context(split: LMSplit, room: int) -> int:
    """Cut sequences longer than the context (the target's end goes); returns how many."""
    cut = 0
    for i, seq in enumerate(split.sequences):
        if len(seq) > room:
            split.sequences[i], cut = seq[:room], cut + 1
    return cut


def default_new_tokens(train: LMSplit) -> int:
    """Room for the longest training target and its eos."""
    return max(len(s) - p for s, p in zip(train.sequences, train.prompt_lengths))


# -- decoding ---------------------------------------------------------------------------------
def decode_batches(lengths: List[int], batch_size: int, room: int, max_new: int) -> List[List[int]]:
    """Row indices grouped into decode batches, longest first.  Left padding makes every row of
    a batch as long as its longest, and a batch decodes at most room - longest new tokens; so a
    row whose prompt leaves fewer than max_new shares its batch only with rows of its own length.
    Each row then gets min(max_new, room - its length) new tokens: what decoding it alone gives."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    short = [i for i in order if lengths[i] + max_new > room]
    groups = [[i for i in short if lengths[i] == n] for n in sorted({lengths[i] for i in short}, reverse=True)]
    groups.append([i for i in order if lengths[i] + max_new <= room])
    return [g[s:s + batch_size] for g in groups for s in range(0, len(g), batch_size)]


def rows_short_of_room(lengths: List[int], room: int, max_new: int) -> Dict[int, int]:
    """{row: the new tokens it gets} for the rows whose prompt leaves fewer than max_new."""
    return {i: room - n for i, n in enumerate(lengths) if room - n < max_new}


@torch.no_grad()
def generate_rows(backbone, prompts: List[List[int]], max_new_tokens: int, cfg: E2EConfig, run: RunConfig,
                  pad_id: int, eos_id: Optional[int]) -> List[List[int]]:
    """The new token ids of each prompt, in order (cut at eos): beam search (or greedy) in
    batches from decode_batches, left-padded."""
    from tqdm import tqdm
    out: List[Optional[List[int]]] = [None] * len(prompts)
    batches = decode_batches([len(p) for p in prompts], cfg.training.batch_size, backbone.input_room,
                             max_new_tokens)
    backbone.eval()
    prepare_for_decoding(backbone)  # a sped-up model's decode layout (fast/layout.py)
    for idx in tqdm(batches, desc="decode", disable=not run.progress, leave=False):
        ids, mask = pad_left([prompts[i] for i in idx], pad_id)
        with autocast(run.device, run.bf16):
            gen = backbone.generate(ids.to(run.device), max_new_tokens, eos_id=eos_id,
                                    attention_mask=mask.to(run.device), beam_size=cfg.beam_size,
                                    length_penalty=cfg.length_penalty)
        for row, i in enumerate(idx):
            new = gen[row, ids.shape[1]:].tolist()
            out[i] = strip_after_stop(new, [eos_id]) if eos_id is not None else new
    return out


def decode(backbone, tokenizer, sources: List[str], cfg: E2EConfig, max_new_tokens: int,
           run: RunConfig) -> List[str]:
    """One generation per source, in order, from [bos] SOURCE [bos]; newlines become spaces."""
    prompts = [prompt_ids(tokenizer, s) for s in sources]
    new = generate_rows(backbone, prompts, max_new_tokens, cfg, run, tokenizer.pad_id, tokenizer.eos_id)
    return [" ".join(tokenizer.decode(ids).split("\n")).strip() for ids in new]


def note_short_of_room(tokenizer, sources: List[str], lines: List[int], path: str, room: int,
                       max_new: int) -> List[Dict[str, int]]:
    """One line on stderr naming the sources whose prompt leaves fewer than max_new tokens in
    the context (their generations may be cut); the same as records for the scores report."""
    lengths = [len(prompt_ids(tokenizer, s)) for s in sources]
    short = rows_short_of_room(lengths, room, max_new)
    if not short:
        return []
    named = ", ".join(f"{path}:{lines[i]} ({lengths[i]} tokens: {n} new)" for i, n in short.items())
    if is_main():  # rank 0 alone speaks (the CLI closes the others' stdout, not their stderr)
        print(f"note: {len(short)} source(s) leave fewer than the {max_new} new tokens asked in the model's "
              f"context of {room}, so their generations may be cut: {named}", file=sys.stderr)
    return [{"line": lines[i], "source_tokens": lengths[i], "new_tokens": n} for i, n in short.items()]


def score(references: List[List[str]], outputs: List[str], cfg: E2EConfig) -> Dict[str, Optional[float]]:
    return e2e_scores(references, outputs, java_metrics=not cfg.no_java)


# -- run --------------------------------------------------------------------------------------
def build_backbone(cfg: E2EConfig, model, tokenizer):
    if cfg.load_adapter:
        backbone, _ = load_adapters(model, cfg.load_adapter, cfg.interpolate, tokenizer)
        print(f"load adapter {' and '.join(cfg.load_adapter)}: {backbone.method}"
              + (f", interpolated {cfg.interpolate} : {1 - cfg.interpolate:g}" if cfg.interpolate is not None else ""))
        return backbone
    return attach(model, cfg.method, tokenizer)


def run(run_cfg: RunConfig, cfg: E2EConfig) -> Dict:
    # every input and output check before the model loads
    if not cfg.no_java:
        require_java()
    outs, adapter = cfg.outputs, cfg.adapter_path
    curves = curves_path(outs["test"]) if cfg.trains else None
    check_distinct_paths({"--train": cfg.train if cfg.trains else None, "--dev": cfg.dev, "--test": cfg.test,
                          "--test_out": outs["test"], "--dev_out": outs["dev"], "--scores_out": outs["scores"],
                          "--save_adapter (.json)": adapter and adapter + ".json",
                          "--save_adapter (.safetensors)": adapter and adapter + ".safetensors",
                          "--log_jsonl": cfg.log_jsonl, "curves (beside --test_out)": curves})
    check_all_writable({"--test_out": outs["test"], "--dev_out": outs["dev"], "--scores_out": outs["scores"],
                        "--save_adapter": adapter and adapter + ".json", "--log_jsonl": cfg.log_jsonl,
                        "curves (beside --test_out)": curves})
    check_export_dir(cfg.export_peft)
    check_adapterhub_dir(cfg.export_adapterhub)
    if cfg.export_adapterhub and cfg.load_adapter:
        check_saved_adapterhub_exportable(cfg.load_adapter[0])
    train_pairs = read_split(cfg.train, cfg, cfg.max_train_rows) if cfg.trains else []
    dev_pairs, test_pairs = read_split(cfg.dev, cfg), read_split(cfg.test, cfg)
    check_lm_adapters(cfg.load_adapter, "--task e2e")

    model, tokenizer = run_cfg.load()
    print(f"load model from {run_cfg.model_path}")
    backbone = build_backbone(cfg, model, tokenizer).to(run_cfg.device)
    room = backbone.input_room
    for pairs, path in ((train_pairs, cfg.train), (dev_pairs, cfg.dev), (test_pairs, cfg.test)):
        check_sources_fit(pairs, tokenizer, room, path)
    splits = {name: LMSplit.from_pairs(tokenizer, pairs, path) for name, pairs, path in
              (("train", train_pairs, cfg.train), ("dev", dev_pairs, cfg.dev)) if pairs}
    for name, split in splits.items():
        cut = fit_to_context(split, room)
        print(f"load {len(split)} {name} pairs from {split.path}" +
              (f"; note: {cut} longer than the model's context of {room} tokens were cut" if cut else ""))
    max_new = cfg.max_new_tokens or (default_new_tokens(splits["train"]) if "train" in splits else 128)

    with RunLog(cfg.log_jsonl, cfg.wandb, job=f"e2e-{cfg.option}") as log:
        if cfg.trains:
            print(f"{cfg.method.method}: {describe_trainable(backbone)}")
            history = fit(backbone, splits["train"], splits["dev"], cfg.training, run_cfg, objective=CausalLM(),
                          on_epoch=lambda r: log.log("epoch", epoch=r.epoch, train_loss=r.train_loss,
                                                     dev_loss=r.dev_loss, seconds=r.seconds),
                          fingerprint={"model": resolved(run_cfg.model_path), "norm": run_cfg.norm,
                                       "option": cfg.option, "method": cfg.method.to_dict(),
                                       "train": data_identity(cfg.train), "dev": data_identity(cfg.dev),
                                       "max_train_rows": cfg.max_train_rows, "columns": [cfg.source_column,
                                                                                        cfg.target_column]})
            plot_curves(history, curves, f"{cfg.option} on {cfg.train}", cfg.training.min_delta)
            print(f"wrote training curves to {curves}")
            backbone.finalize()
            if adapter:
                size = save_adapter(backbone, adapter, extra={"task": "e2e", "source_column": cfg.source_column,
                                                              "target_column": cfg.target_column})
                print(f"saved adapter to {adapter}.safetensors/.json ({size:,} bytes)")
        if cfg.export_peft:
            export_for_task(backbone, cfg.export_peft, run_cfg.model_path)
        if cfg.export_adapterhub:
            export_adapterhub_for_task(backbone, cfg.export_adapterhub, run_cfg.model_path)
        results, short_of_room, generations = {}, {}, {}
        for name, pairs, path in (("test", test_pairs, cfg.test), ("dev", dev_pairs if outs["dev"] else [], cfg.dev)):
            if not pairs:
                continue
            grouped = group_references(pairs)
            sources, references = [s for s, _ in grouped], [r for _, r in grouped]
            print(f"decoding {len(sources)} {name} sources: beam {cfg.beam_size}, up to {max_new} new tokens")
            first_lines = {}
            for p in pairs:
                first_lines.setdefault(p.source, p.line)
            short = note_short_of_room(tokenizer, sources, [first_lines[s] for s in sources], path, room, max_new)
            if short:
                short_of_room[name] = short
            outputs = decode(backbone, tokenizer, sources, cfg, max_new, run_cfg)
            results[name] = score(references, outputs, cfg)
            generations[name] = "".join(o + "\n" for o in outputs)
            print(f"{name} scores ({len(sources)} sources, {sum(map(len, references))} references):")
            print(format_scores(results[name]))
            log.log("eval", split=name, **{k: v for k, v in results[name].items() if v is not None})
    report = {"model": run_cfg.model_path, "method": backbone.method,
              "config": {"beam_size": cfg.beam_size, "length_penalty": cfg.length_penalty,
                         "max_new_tokens": max_new, "lr": cfg.training.lr, "epochs": cfg.training.epochs,
                         "batch_size": cfg.training.batch_size, "lr_schedule": cfg.training.lr_schedule},
              "scores": results, "short_of_room": short_of_room}
    # the generations and their report are one unit, the report last: all land, or none
    atomic_write_group([*((outs[name], contents(text)) for name, text in generations.items()),
                        (outs["scores"], contents(json.dumps(report, indent=1)))])
    print(f"wrote {outs['test']} and the scores to {outs['scores']}")
    return results
