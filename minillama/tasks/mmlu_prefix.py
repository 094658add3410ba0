"""`run_llama.py --option prefix | bottleneck --task mmlu`: a prefix-family adapter, or
bottleneck adapters, trained on MMLU (the method is the config's `method`; `option` names the
default adapter file, mmlu-<option>-adapter).

Training data.  MMLU's auxiliary_train split is not in the mirror, and test must stay
untouched for the final numbers, so the adapter trains on val (1531 questions, the split
MMLU provides for tuning), with `holdout` of each subject held out for early stopping;
dev keeps its role as the pool of k-shot exemplars (never a training target).
The loss is the answer-letter cross-entropy over the 4 letter logits at the last prompt
position (heads.VerbalizerClassifier with the letters as single-token names).
Reported: test accuracy and refusal rate, baseline (the frozen model alone) vs tuned,
in logits mode and, with --mmlu_mode generate, also by generation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from .. import mmlu_data
from ..adapters import AdapterConfig, PrefixTuningConfig, attach, load_adapters, parameter_counts, save_adapter
from ..adapters.registry import trainers
from ..adapters.io import check_adapter_sources, check_lm_adapters, check_saved_exportable
from ..curves import curves_path, plot_curves
from ..adapters.peft_format import check_export_dir, check_exportable, export_for_task
from ..data import Split
from ..errors import MinillamaError
from ..files import check_all_writable, check_distinct_paths
from ..heads import VerbalizerClassifier
from ..mmlu import (MMLUSettings, encode_questions, evaluate_with, format_sweep, letter_token_ids, load_dev,
                    load_questions, temperature_sweep, write_report)
from ..mmlu_data import Question
from ..resume import data_identity, resolved
from ..flags import flag, same_flag
from ..runconfig import RunConfig
from ..runlog import RunLog
from ..train import TrainConfig, describe_trainable, fit


OPTIONS = trainers("mmlu")  # what --task mmlu trains (the method configs' `tasks`)


@dataclass
class MMLUPrefixConfig:
    settings: MMLUSettings = field(default_factory=MMLUSettings)
    option: str = "prefix"                     # prefix | bottleneck: names the default adapter file and the printed lines
    method: AdapterConfig = field(default_factory=PrefixTuningConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    holdout: float = flag(0.2, "--mmlu_holdout", readers="mmlu_prefix",
                          help="share of val (per subject) held out for early stopping (default {default})")
    save_adapter: Optional[str] = same_flag(None, "--save_adapter", readers="save")  # None: mmlu-<option>-adapter
    load_adapter: Optional[List[str]] = same_flag(None, "--load_adapter", readers="adapters")  # vs the baseline
    interpolate: Optional[float] = same_flag(None, "--interpolate", readers="adapters")
    export_peft: Optional[str] = same_flag(None, "--export_peft", readers="export")
    out: Optional[str] = same_flag(None, "--mmlu_out", readers="mmlu")
    log_jsonl: Optional[str] = same_flag(None, "--log_jsonl", readers="log")
    wandb: bool = same_flag(False, "--wandb", readers="log")

    def __post_init__(self):
        if self.option not in OPTIONS:
            raise MinillamaError(f"--task mmlu trains --option {' or '.join(OPTIONS)}, not {self.option}")
        if self.save_adapter is None:
            self.save_adapter = f"mmlu-{self.option}-adapter"
        if not 0.0 < self.holdout < 1.0:
            raise MinillamaError(f"--mmlu_holdout must be in (0, 1), got {self.holdout}")
        check_adapter_sources(self.load_adapter, self.interpolate)
        if self.export_peft and not self.load_adapter:  # decided now, not after the training
            check_exportable(self.method.method, self.method.to_dict())
        self.training = self.training.with_lr(self.method.lr_for("mmlu"))

    @property
    def trains(self) -> bool:
        """An adapter trains unless --load_adapter evaluates saved adapters."""
        return not self.load_adapter

    def words(self, method: str) -> str:
        """The adapter in the printed lines: 'prefix <mode>' for the prefix family, else its method."""
        return f"prefix {method}" if self.option == "prefix" else method


def split_holdout(by_subject: Dict[str, List[Question]], fraction: float,
                  seed: int) -> Tuple[List[Question], List[Question]]:
    """(train, held-out): per subject a seeded shuffle, round(fraction * n) questions
    (at least one when the subject has two or more) held out, so every subject is
    represented in both."""
    if not 0.0 < fraction < 1.0:
        raise MinillamaError(f"--mmlu_holdout must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    train, held = [], []
    for questions in by_subject.values():
        order = list(questions)
        rng.shuffle(order)
        n_held = min(max(1, round(fraction * len(order))), len(order) - 1) if len(order) > 1 else 0
        held += order[:n_held]
        train += order[n_held:]
    if not train or not held:
        raise MinillamaError("too few val questions to train and hold out (raise --limit or select more --subjects)")
    return train, held


def side_by_side(results: Dict[str, Dict[str, Dict]]) -> str:
    """Baseline vs tuned, one line per (mode, metric)."""
    lines = [f"{'test':<28}  {'baseline':>8}  {'tuned':>8}"]
    for mode in results["baseline"]:
        b, t = results["baseline"][mode], results["tuned"][mode]
        for key in ("micro_accuracy", "macro_accuracy", "refusal_rate"):
            lines.append(f"{mode + ' ' + key:<28}  {b[key]:>8.3f}  {t[key]:>8.3f}")
    return "\n".join(lines)


def fingerprint(run_cfg: RunConfig, cfg: MMLUPrefixConfig) -> Dict:
    """What a resumed run must share with the interrupted one, beside the training settings:
    the questions it trains on (val) and, with k-shot prompts, their exemplars (dev), by content."""
    s = cfg.settings
    return {"model": resolved(run_cfg.model_path), "method": cfg.method.to_dict(),
            "settings": repr(replace(s, mmlu_dir=resolved(s.mmlu_dir))), "holdout": cfg.holdout,
            "val": data_identity(mmlu_data.split_dir(s.mmlu_dir, "val")),
            "dev": data_identity(mmlu_data.split_dir(s.mmlu_dir, "dev")) if s.k_shot else None}


def run(run_cfg: RunConfig, cfg: MMLUPrefixConfig) -> Dict:
    trains = cfg.trains
    curves = curves_path(cfg.save_adapter) if trains else None
    check_distinct_paths({"--mmlu_out": cfg.out, "--log_jsonl": cfg.log_jsonl,
                          "--save_adapter (.json)": cfg.save_adapter + ".json" if trains else None,
                          "--save_adapter (.safetensors)": cfg.save_adapter + ".safetensors" if trains else None,
                          "curves (beside --save_adapter)": curves})
    check_all_writable({"--mmlu_out": cfg.out, "--log_jsonl": cfg.log_jsonl,
                        "--save_adapter": cfg.save_adapter + ".json" if trains else None,
                        "curves (beside --save_adapter)": curves})
    check_export_dir(cfg.export_peft)
    if cfg.export_peft and cfg.load_adapter:
        check_saved_exportable(cfg.load_adapter[0])
    s = cfg.settings
    train_q, held_q = split_holdout(load_questions(s, "val"), cfg.holdout, run_cfg.seed)
    test_q = mmlu_data.flatten(load_questions(s, "test"))
    dev = load_dev(s)
    check_lm_adapters(cfg.load_adapter, "--task mmlu")
    model, tokenizer = run_cfg.load(chat=s.chat)
    print(f"load model from {run_cfg.model_path}; MMLU: train {len(train_q)} / held-out {len(held_q)} "
          f"(val), test {len(test_q)}")
    modes = ["logits"] + (["generate"] if s.mode == "generate" else [])
    evaluate = lambda m, mode: evaluate_with(m, tokenizer, test_q, dev, s, mode, run_cfg.device,  # noqa: E731
                                             run_cfg.bf16, run_cfg.progress)
    results: Dict[str, Dict[str, Dict]] = {"baseline": {}, "tuned": {}}
    records: Dict[str, List[Dict]] = {}
    sweep = lambda m: temperature_sweep(m, tokenizer, test_q, dev, s, run_cfg.seed, run_cfg.device,  # noqa: E731
                                        run_cfg.bf16, run_cfg.progress)
    sweeps: Dict[str, Dict] = {}
    for mode in modes:
        results["baseline"][mode], records[f"baseline_{mode}"] = evaluate(model, mode)
    if s.temperatures:
        sweeps["baseline"] = sweep(model)

    if trains:
        backbone = attach(model, cfg.method, tokenizer).to(run_cfg.device)
    else:
        backbone = load_adapters(model, cfg.load_adapter, cfg.interpolate, tokenizer)[0]
    length = getattr(backbone, "length", None)  # (a loaded LoRA adapter has none)
    print(cfg.words(backbone.method) + (f", length {length}" if length is not None else "")
          + f": {describe_trainable(backbone)}")
    with RunLog(cfg.log_jsonl, cfg.wandb, job=f"mmlu-{cfg.option}") as log:
        history = []
        if trains:
            classifier = VerbalizerClassifier(backbone, [[i] for i in letter_token_ids(tokenizer, s.chat)],
                                              log_probs=False)
            splits = {}
            for name, qs in (("train", train_q), ("held-out", held_q)):
                prompts, _ = encode_questions(tokenizer, qs, dev, s.k_shot, s.chat, backbone.input_room)
                splits[name] = Split(qs, prompts, tokenizer.pad_id, name)
            history = fit(classifier, splits["train"], splits["held-out"], cfg.training, run_cfg,
                          on_epoch=lambda r: log.log("epoch", epoch=r.epoch, train_loss=r.train_loss,
                                                     train_acc=r.train_acc, heldout_acc=r.dev_acc),
                          fingerprint=fingerprint(run_cfg, cfg))
            plot_curves(history, curves, f"{cfg.words(cfg.method.method)} on MMLU", cfg.training.min_delta)
            print(f"wrote training curves to {curves}")
            backbone.finalize()
        backbone.eval()
        for mode in modes:
            results["tuned"][mode], records[f"tuned_{mode}"] = evaluate(backbone, mode)
        print(side_by_side(results))
        if s.temperatures:
            sweeps["tuned"] = sweep(backbone)
            for which, table in sweeps.items():
                print(f"{which}: sampled answers, seeded by --seed {run_cfg.seed}")
                print(format_sweep(table))
        for which in results:
            for mode in modes:
                summary = {k: v for k, v in results[which][mode].items() if k != "subjects"}
                log.log("test", **{**summary, "model": which, "mode": mode})
    method = {"prefix_mode": backbone.method, "prefix_length": length} if cfg.option == "prefix" else \
        {"method": backbone.method, "config": backbone.cfg.to_dict()}
    report = {"model": run_cfg.model_path, **method,
              "trainable_parameters": parameter_counts(backbone)["trainable"],
              "data": {"train": "val minus held-out", "n_train": len(train_q), "n_heldout": len(held_q),
                       "n_test": len(test_q), "holdout": cfg.holdout},
              "history": [{"epoch": h.epoch, "train_loss": h.train_loss, "train_acc": h.train_acc,
                           "heldout_acc": h.dev_acc} for h in history],
              "baseline": results["baseline"], "tuned": results["tuned"],
              **({"temperatures": sweeps} if sweeps else {})}
    if cfg.out:
        write_report(cfg.out, report, [dict(r, run=name) for name, rs in records.items() for r in rs])
        print(f"wrote MMLU report to {cfg.out}")
    if trains:
        size = save_adapter(backbone, cfg.save_adapter, extra={"task": "mmlu", "chat": s.chat, "k_shot": s.k_shot})
        print(f"saved adapter to {cfg.save_adapter}.safetensors/.json ({size:,} bytes)")
    if cfg.export_peft:
        export_for_task(backbone, cfg.export_peft, run_cfg.model_path)
    return report
