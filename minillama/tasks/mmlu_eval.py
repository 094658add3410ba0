"""`run_llama.py --option mmlu`: multiple-choice accuracy on MMLU (scoring: minillama/mmlu.py),
of the model alone or with a saved adapter (--load_adapter A [B --interpolate ALPHA])."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import mmlu_data
from ..adapters import load_adapters
from ..adapters.io import check_adapter_sources, check_lm_adapters
from ..errors import MinillamaError
from ..files import check_all_writable, check_distinct_paths
from ..mmlu import (MMLUSettings, evaluate_with, format_sweep, format_table, load_dev, load_questions,
                    temperature_sweep, write_report)
from ..flags import flag, same_flag
from ..runconfig import RunConfig
from ..runlog import RunLog


@dataclass
class MMLUEvalConfig:
    settings: MMLUSettings = field(default_factory=MMLUSettings)
    split: str = flag("test", "--mmlu_split", readers="mmlu_eval", choices=mmlu_data.SPLITS,
                      help="the questions evaluated (default {default})")
    out: Optional[str] = flag(None, "--mmlu_out", readers="mmlu",
                              help="report: .json, or .jsonl with one line per question")
    load_adapter: Optional[List[str]] = same_flag(None, "--load_adapter", readers="adapters")
    interpolate: Optional[float] = same_flag(None, "--interpolate", readers="adapters")
    log_jsonl: Optional[str] = same_flag(None, "--log_jsonl", readers="log")
    wandb: bool = same_flag(False, "--wandb", readers="log")

    def __post_init__(self):
        if self.split not in mmlu_data.SPLITS:
            raise MinillamaError(f"--mmlu_split must be one of {', '.join(mmlu_data.SPLITS)}, got {self.split!r}")
        check_adapter_sources(self.load_adapter, self.interpolate)


def run(run_cfg: RunConfig, cfg: MMLUEvalConfig) -> Dict:
    """Evaluate the model (plus --load_adapter) on --mmlu_split."""
    check_distinct_paths({"--mmlu_out": cfg.out, "--log_jsonl": cfg.log_jsonl})
    check_all_writable({"--mmlu_out": cfg.out, "--log_jsonl": cfg.log_jsonl})
    s = cfg.settings
    questions = mmlu_data.flatten(load_questions(s, cfg.split))
    dev = load_dev(s)
    check_lm_adapters(cfg.load_adapter, "--option mmlu")
    model, tokenizer = run_cfg.load(chat=s.chat)
    if cfg.load_adapter:  # evaluate a saved adapter (two: --interpolate)
        model = load_adapters(model, cfg.load_adapter, cfg.interpolate, tokenizer)[0].eval()
    print(f"load model from {run_cfg.model_path}; MMLU {cfg.split}: {len(questions)} questions, "
          f"{s.k_shot}-shot, mode {s.mode}")
    report, records = evaluate_with(model, tokenizer, questions, dev, s, device=run_cfg.device, bf16=run_cfg.bf16,
                                    progress=run_cfg.progress)
    report.update({"model": run_cfg.model_path, "split": cfg.split})
    print(format_table(report))
    print(f"mmlu {cfg.split} acc :: {report['accuracy']:.3f} (macro {report['macro_accuracy']:.3f}, "
          f"refusal rate {report['refusal_rate']:.3f})")
    if s.temperatures:
        report["temperatures"] = temperature_sweep(model, tokenizer, questions, dev, s, run_cfg.seed,
                                                   run_cfg.device, run_cfg.bf16, run_cfg.progress)
        print(f"sampled answers, seeded by --seed {run_cfg.seed}:")
        print(format_sweep(report["temperatures"]))
    if cfg.out:
        write_report(cfg.out, report, records)
        print(f"wrote MMLU report to {cfg.out}")
    with RunLog(cfg.log_jsonl, cfg.wandb, job="mmlu-eval") as log:
        log.log("eval", **{k: v for k, v in report.items() if k != "subjects"})
    return report
