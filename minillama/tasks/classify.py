"""`run_llama.py --option prompt | finetune | lora | prefix | bottleneck | probe`: sentiment classification
on the course's SST-5 and CFIMDB files.

Each option = a backbone (the frozen Llama, or one adapted by a method from
minillama/adapters) + an answer reader from minillama/heads.py:
- prompt:   the frozen model, label names scored after the course prompt (verbalizer);
- finetune: every weight trains (adapters/full.py), a linear head on the last token;
- lora:     LoRA factors + the head;
- prefix:   a prefix-family method (--prefix_mode) + the cls head or the verbalizer;
- bottleneck: bottleneck adapters + the head;
- probe:    the frozen model + a linear or MLP head (adapters/probe.py), every sentence's
            features computed once before training (heads.FeatureCache, `cache_features`).
The training loop (minillama/train.py) and the output writing are shared.

Several saved deep-prefix adapters, each on its own files, in one pass (`run_mixed`):
    --option prefix --load_adapter A B --adapter_names a,b
        --dev a-dev.txt,b-dev.txt --test a-test.txt,b-test.txt
        [--label-names la.json,lb.json] [--dev_out a-out.txt,b-out.txt] [--test_out ...]
Comma lists give one entry per adapter, in --adapter_names order.  Label names default to
the ones saved in each adapter file; outputs to <name>-{dev,test}-prefix-output.txt.
Batches mix the rows of every adapter (adapters/multi.py); each row answers with its
own adapter's cls head or label names (heads.RowReader).
"""
from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from ..adapters.registry import OUTPUT_WORDS
from ..adapters import AdapterConfig, attach, load_adapter, load_adapters, parameter_counts, save_adapter
from ..adapters.adapterhub_format import check_adapterhub_dir, check_adapterhub_exportable, export_adapterhub_for_task
from ..adapters.io import check_adapter_sources, check_saved_adapterhub_exportable, check_saved_exportable, peek_adapter
from ..classification import (HEADS, HIDDEN_DROPOUT_PROB, POOL_OF_HEAD, PREFIX_HEAD, check_reading, course_prompt,
                              mixed_run_paths, note_cut_sentences, per_name, placeholder_note, reader_kind,
                              row_splits, write_row_results)
from ..curves import curves_path, plot_curves
from ..adapters.peft_format import check_export_dir, check_exportable, export_for_task
from ..adapters.probe import Probe
from ..data import Example, Split, load_split, pad_batch, read_examples, read_label_names, write_predictions
from ..errors import MinillamaError
from ..files import check_all_writable, check_distinct_paths
from ..flags import comma_list, flag
from ..heads import FeatureCache, HeadClassifier, RowReader, VerbalizerClassifier, label_token_ids
from ..resume import data_identity, resolved
from ..runconfig import RunConfig
from ..runlog import RunLog
from ..train import TrainConfig, accuracy, autocast, check_warmup, describe_trainable, fit, predict

# The course's default data set, for the fields left unset (train, label_names)
DEFAULT_TRAIN = "data/cfimdb-train.txt"
DEFAULT_LABEL_NAMES = "data/cfimdb-label-mapping.json"


def demonstrations(examples: Sequence[Example], names: Sequence[str], k: int, seed: int) -> str:
    """In-context learning: k labelled examples, balanced across the labels (one of each label
    in turn, each label's examples in an order drawn with `seed`), each written in the zero-shot
    template and answered, one per line: the text read before every sentence."""
    if k > len(examples):
        raise MinillamaError(f"--k_shot {k}: the training file holds only {len(examples)} examples: lower --k_shot")
    rng = random.Random(seed)
    by_label = [[ex for ex in examples if ex.label == label] for label in range(len(names))]
    for pool in by_label:
        rng.shuffle(pool)
    in_turn = [ex for turn in itertools.zip_longest(*by_label) for ex in turn if ex is not None]
    chosen = in_turn[:k]
    return "".join(f"{ex.sentence} {course_prompt(names)}{names[ex.label]}\n" for ex in chosen)


def dataset_name(train_path: str) -> str:
    """'data/sst-train.txt' -> 'sst' (the part of the file name before the first '-')."""
    stem = os.path.splitext(os.path.basename(train_path))[0]
    return stem.split("-")[0] or "data"


@dataclass
class ClassifyConfig:
    option: str = "prompt"                   # names the default output files (OUTPUT_WORDS)
    method: Optional[AdapterConfig] = None   # None: the frozen model (zero-shot prompting)
    # None: verbalizer for the frozen model, PREFIX_HEAD for the prefix family, else cls (the
    # course's; bench/accuracy.py compares it with the verbalizer: RESULTS.md).
    head: Optional[str] = flag(None, "--prefix_head", readers="head", choices=HEADS,
                               help="cls: linear head on the last token; mean (default): linear head on the mean "
                                    "of all tokens' final hidden states; verbalizer: LM head scores the label names "
                                    "after the course prompt (no new head: the whole task in the prefix)")
    train: Optional[str] = flag(None, "--train", readers="classify_train",
                                help=f"default {DEFAULT_TRAIN}; its name (sst-train.txt: sst) names the default "
                                     "outputs, else --dev's when nothing trains")
    dev: str = flag("data/cfimdb-dev.txt", "--dev", readers="classify", help="default {default}")
    test: str = flag("data/cfimdb-test.txt", "--test", readers="classify", help="default {default}")
    label_names: Optional[str] = flag(None, "--label-names", readers="classify",
                                      help="JSON list of label names (default: the ones saved with --load_adapter's "
                                           f"adapter, else {DEFAULT_LABEL_NAMES})")
    dev_out: Optional[str] = flag(None, "--dev_out", readers="classify",
                                  help="default: <dataset>-dev-<option>-output.txt")
    test_out: Optional[str] = flag(None, "--test_out", readers="classify",
                                   help="default: <dataset>-test-<option>-output.txt")
    max_sentence_len: Optional[int] = flag(None, "--max_sentence_len", readers="classify", type=int,
                                           help="cut each sentence to this many tokens (default: none)")
    k_shot: int = flag(0, "--k_shot", readers="k_shot",
                       help="MMLU: 0..5 exemplars from dev before each question; --option prompt: K labelled --train "
                            "examples (balanced, chosen with --seed) before each sentence (default {default})")
    hidden_dropout_prob: float = flag(HIDDEN_DROPOUT_PROB, "--hidden_dropout_prob", readers="head", help="default {default}")
    training: TrainConfig = field(default_factory=TrainConfig)
    save_adapter: Optional[str] = flag(None, "--save_adapter", readers="save",
                                       help="write the trained adapter to PATH.safetensors + PATH.json "
                                            "(prefix default: <dataset>-prefix-adapter; --task mmlu: "
                                            "mmlu-prefix-adapter)")
    load_adapter: Optional[List[str]] = flag(None, "--load_adapter", readers="adapters", nargs="+", metavar="PATH",
                                             help="evaluate saved adapter(s) without training; with two, see "
                                                  "--interpolate; a PATH may also be a PEFT or AdapterHub adapter "
                                                  "directory trained on this base")
    interpolate: Optional[float] = flag(None, "--interpolate", readers="adapters", type=float, metavar="ALPHA",
                                        help="with two --load_adapter: alpha*A + (1-alpha)*B")
    export_peft: Optional[str] = flag(None, "--export_peft", readers="export", metavar="DIR",
                                      help="also write the adapter (trained, or given by --load_adapter) as a Hugging "
                                           "Face PEFT directory: {peft_methods} (a classification head stays behind)")
    export_adapterhub: Optional[str] = flag(None, "--export_adapterhub", readers="export_adapterhub", metavar="DIR",
                                            help="also write the bottleneck adapter (trained, or given by "
                                                 "--load_adapter) in AdapterHub's saved-adapter layout, which "
                                                 "adapters' load_adapter reads on a transformers LlamaForCausalLM "
                                                 "(a classification head stays behind)")
    adapter_names: Optional[List[str]] = flag(None, "--adapter_names", readers="mixed", type=comma_list,
                                              metavar="a,b,...",
                                              help="with several --load_adapter (deep prefixes): evaluate each on "
                                                   "its own files in one pass, batches mixing them; --dev, --test "
                                                   "(and --label-names, --dev_out, --test_out) then take one "
                                                   "comma-separated entry per adapter")
    log_jsonl: Optional[str] = flag(None, "--log_jsonl", readers="log",
                                    help="this run's per-epoch / eval records as JSON lines (see runlog.py)")
    wandb: bool = flag(False, "--wandb", readers="log", help="also log to Weights & Biases (if installed)")

    def __post_init__(self):
        if self.option not in OUTPUT_WORDS:
            raise MinillamaError(f"classification option must be one of {', '.join(OUTPUT_WORDS)}, got {self.option!r}")
        if self.head is None:
            self.head = "verbalizer" if self.method is None else PREFIX_HEAD if self.option == "prefix" else "cls"
        check_reading(self.head, self.hidden_dropout_prob, self.max_sentence_len)
        if self.method is None and self.head != "verbalizer":
            raise MinillamaError("the frozen model (--option prompt) reads its answer with the verbalizer")
        if self.option == "probe" and self.head == "verbalizer" and not self.load_adapter:
            raise MinillamaError("--option probe trains a head on the frozen model's features, and the verbalizer "
                                 "has none: use --prefix_head cls or mean (or --option prompt for the verbalizer)")
        if isinstance(self.k_shot, bool) or not isinstance(self.k_shot, int) or self.k_shot < 0:
            raise MinillamaError(f"--k_shot must be a non-negative number of examples, got {self.k_shot}")
        if self.k_shot and self.option != "prompt":
            raise MinillamaError(f"--k_shot puts examples in the prompt of --option prompt, not --option {self.option}")
        check_adapter_sources(self.load_adapter, self.interpolate, self.adapter_names)
        if self.adapter_names and self.export_peft:
            raise MinillamaError("--export_peft converts one adapter: drop --adapter_names, or --export_peft")
        if self.export_peft and (self.option in ("prompt", "finetune") and not self.load_adapter):
            raise MinillamaError(f"--export_peft: --option {self.option} trains no adapter "
                                 "(use --option lora or prefix, or --load_adapter an adapter to convert)")
        if self.export_peft and self.trains:  # decided now, not after the training
            check_exportable(self.method.method, self.method.to_dict())
        if self.export_adapterhub and (self.adapter_names or (self.method is None and not self.load_adapter)):
            raise MinillamaError("--export_adapterhub converts one bottleneck adapter: train one with --option "
                                 "bottleneck, or --load_adapter one (without --adapter_names)")
        if self.export_adapterhub and self.trains:
            check_adapterhub_exportable(self.method.method)
        if self.method is not None:
            self.training = self.training.with_lr(self.method.lr_for("classify"))

    @property
    def trains(self) -> bool:
        """A method trains unless --load_adapter evaluates saved adapters."""
        return self.method is not None and not self.load_adapter

    @property
    def train_path(self) -> str:
        return self.train or DEFAULT_TRAIN

    @property
    def dataset(self) -> str:
        """The data set's name in the default output names: --train's ('data/sst-train.txt' -> 'sst');
        a run that only evaluates, given no --train, names them after --dev's file (sst-dev.txt ->
        sst): the predictions are of that file."""
        return dataset_name(self.train or (DEFAULT_TRAIN if self.trains else self.dev))

    @property
    def outputs(self) -> Dict[str, str]:
        name, word = self.dataset, OUTPUT_WORDS[self.option]
        return {"dev": self.dev_out or f"{name}-dev-{word}-output.txt",
                "test": self.test_out or f"{name}-test-{word}-output.txt"}

    @property
    def adapter_path(self) -> Optional[str]:
        """Where the trained adapter goes: --save_adapter, by default <dataset>-prefix-adapter
        next to the dev output for the prefix family (other methods only when asked)."""
        if not self.trains or (self.save_adapter is None and self.option != "prefix"):
            return None
        default = os.path.join(os.path.dirname(self.outputs["dev"]), f"{self.dataset}-prefix-adapter")
        return self.save_adapter or default


# -- building the classifier ---------------------------------------------------------------
def build_backbone(cfg: ClassifyConfig, model: nn.Module, tokenizer):
    """(backbone, saved head tensors or None)."""
    if cfg.load_adapter:
        backbone, head_state = load_adapters(model, cfg.load_adapter, cfg.interpolate, tokenizer)
        print(f"load adapter {', '.join(cfg.load_adapter)}: {backbone.method}, "
              f"head {saved_head(backbone, head_state)}")
        return backbone, head_state
    if cfg.method is None:
        return model.requires_grad_(False), None
    return attach(model, cfg.method, tokenizer), None


def saved_head(adapter: nn.Module, head_state: Optional[Dict[str, torch.Tensor]]) -> str:
    """The head a loaded adapter was trained with: verbalizer (no head tensors), else the
    `prefix_head` its file records (files from before the mean head: cls)."""
    if not head_state:
        return "verbalizer"
    recorded = getattr(adapter, "adapter_meta", {}).get("prefix_head")
    return recorded if recorded in POOL_OF_HEAD else "cls"


def build_classifier(cfg: ClassifyConfig, backbone: nn.Module, tokenizer, label_names: List[str],
                     head_state: Optional[Dict[str, torch.Tensor]], names_from: str = "") -> nn.Module:
    head = saved_head(backbone, head_state) if cfg.load_adapter else cfg.head
    probe = isinstance(backbone, Probe)  # its own head, over features computed once
    if probe and head == "verbalizer":
        raise MinillamaError(f"adapter {cfg.load_adapter[0]} is a probe without its head tensors (head.*): "
                             "train and save it again")
    if head == "verbalizer":
        return VerbalizerClassifier(backbone, label_token_ids(tokenizer, label_names))
    classifier = HeadClassifier(backbone, backbone.config.dim, len(label_names), cfg.hidden_dropout_prob,
                                pool=POOL_OF_HEAD[head], head=backbone.make_head(len(label_names)) if probe else None,
                                cache=FeatureCache() if probe else None)
    if head_state:
        check_head_state(classifier.head, head_state, len(label_names), names_from or cfg.label_names)
        classifier.head.load_state_dict(head_state)
    return classifier


def check_head_state(head: nn.Module, saved: Dict[str, torch.Tensor], num_labels: int, names_from: str):
    """A loaded adapter's head tensors fit the head built for it: its label count (the output
    layer's rows), then every tensor's name and shape."""
    expected = head.state_dict()
    out = [name for name in expected if name.endswith("weight")][-1]  # the output layer's weight
    if out in saved and saved[out].shape[0] != num_labels:
        raise MinillamaError(f"the adapter's head has {saved[out].shape[0]} labels but "
                             f"{names_from} names {num_labels}: use the adapter's data set")
    for name, tensor in expected.items():
        if name not in saved or saved[name].shape != tensor.shape:
            raise MinillamaError(f"the adapter's head tensors ({', '.join(sorted(saved))}) do not fit its head "
                                 f"({', '.join(f'{k} {list(t.shape)}' for k, t in expected.items())}): "
                                 "train and save it again")


def describe_method(cfg: ClassifyConfig, classifier: nn.Module) -> str:
    """One line: what trains, and its share of the model."""
    backbone = classifier.backbone
    counts = parameter_counts(backbone)
    head = sum(p.numel() for p in getattr(classifier, "head", nn.Identity()).parameters())
    what = backbone.describe() + (f", head {cfg.head}" if cfg.option == "prefix" else "")
    # the share is printed once, by describe_trainable; full fine-tuning's "adapter" is the model
    return f"{what}: {counts['trainable']:,} adapter + {head:,} head parameters"


def finish(cfg: ClassifyConfig, classifier: nn.Module, label_names: List[str], model_path: str):
    """After training: finalize the method (LoRA merges, prefix tuning folds) and save the
    adapter; --export_peft also writes it (trained or loaded) as a PEFT directory."""
    backbone = classifier.backbone
    head_state = classifier.head.state_dict() if isinstance(classifier, HeadClassifier) else None
    path = cfg.adapter_path
    if cfg.trains:
        backbone.finalize()
    if path is not None:
        nbytes = save_adapter(backbone, path, label_names, head_state,
                              extra={"prefix_head": cfg.head, "dataset": cfg.dataset})
        model_bytes = sum(p.numel() * p.element_size() for p in backbone.base.parameters())
        print(f"finalized {backbone.method}: {parameter_counts(backbone)['trainable']:,} adapter parameters; "
              f"saved adapter {path}.safetensors/.json: {nbytes:,} bytes vs {model_bytes:,} bytes of model weights "
              f"({100 * nbytes / model_bytes:.3f}%)")
    if cfg.export_peft:
        export_for_task(backbone, cfg.export_peft, model_path, head_left_out=head_state is not None)
    if cfg.export_adapterhub:
        export_adapterhub_for_task(backbone, cfg.export_adapterhub, model_path, head_left_out=head_state is not None)


# -- data ---------------------------------------------------------------------------------
def context_budget(backbone, tokenizer, classifier, suffix: Optional[str], max_sentence_len: Optional[int],
                   prefix: str = "", k_shot: int = 0) -> int:
    """Sentence tokens that fit the model's context with BOS, the in-context examples, the
    prompt and the label-name tokens; the smaller of that and --max_sentence_len."""
    shots = len(tokenizer.encode(prefix, bos=False)) if prefix else 0
    extra = 1 + shots + (len(tokenizer.encode(suffix, bos=False)) if suffix else 0) + \
        getattr(classifier, "extra_positions", 0)
    fit_len = backbone.input_room - extra
    if fit_len <= 0 and k_shot:
        raise MinillamaError(f"--k_shot {k_shot}: the {k_shot} examples take {shots} of the model's "
                             f"{backbone.input_room}-token context, leaving no room for a sentence: lower --k_shot")
    if fit_len <= 0:
        raise MinillamaError(f"the model's context ({backbone.input_room} tokens) is too short for the prompt")
    return fit_len if max_sentence_len is None else min(max_sentence_len, fit_len)


def cache_features(classifier: HeadClassifier, splits: Dict[str, Split], batch_size: int, run_cfg: RunConfig):
    """--option probe: every sentence's features under the frozen model, computed once, split by
    split, before anything trains or predicts (heads.FeatureCache), so that each epoch costs the
    head alone.  In file order and in eval mode, as predict runs them."""
    with torch.no_grad():
        for name, split in splits.items():
            for batch in tqdm(split.batches(batch_size), total=split.num_batches(batch_size), desc=f"features {name}",
                              disable=not run_cfg.progress, leave=False):
                batch = batch.to(run_cfg.device)
                with autocast(run_cfg.device, run_cfg.bf16):
                    classifier.features(batch.input_ids, batch.attention_mask)
    print(f"features of the frozen model computed once: {len(classifier.cache):,} distinct sentences of "
          + ", ".join(f"{name} ({len(split)})" for name, split in splits.items()))


# -- run ------------------------------------------------------------------------------------
def fingerprint(run_cfg: RunConfig, cfg: ClassifyConfig) -> Dict:
    """What a resumed run must share with the interrupted one, beside the training settings."""
    return {"model": resolved(run_cfg.model_path), "norm": run_cfg.norm, "option": cfg.option, "head": cfg.head,
            "method": cfg.method.to_dict(), "train": data_identity(cfg.train_path), "dev": data_identity(cfg.dev),
            "label_names": data_identity(cfg.label_names or DEFAULT_LABEL_NAMES),
            "max_sentence_len": cfg.max_sentence_len,
            "hidden_dropout_prob": cfg.hidden_dropout_prob}


def saved_label_names(path: str) -> Optional[List[str]]:
    """The label names a saved adapter records (None: a PEFT directory, or a file without any)."""
    names = peek_adapter(path).get("label_names")
    if names is None:
        return None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n.strip() for n in names):
        raise MinillamaError(f"{path}.json: 'label_names' must be a list of at least two names, got {names!r}: "
                             "give --label-names")
    return names


def resolve_label_names(cfg: ClassifyConfig) -> Tuple[List[str], str]:
    """(label names, where they come from): --label-names; else the names saved with the
    (first) --load_adapter adapter; else DEFAULT_LABEL_NAMES."""
    if cfg.label_names:
        return read_label_names(cfg.label_names), cfg.label_names
    saved = saved_label_names(cfg.load_adapter[0]) if cfg.load_adapter else None
    if saved:
        return saved, f"the label names saved with {cfg.load_adapter[0]}"
    return read_label_names(DEFAULT_LABEL_NAMES), DEFAULT_LABEL_NAMES


def run(run_cfg: RunConfig, cfg: ClassifyConfig) -> Dict[str, float]:
    if cfg.adapter_names:
        return run_mixed(run_cfg, cfg)
    # every input and output check before the model loads
    label_names, names_from = resolve_label_names(cfg)
    if names_from != cfg.label_names:
        print(f"label names: {', '.join(label_names)} ({names_from})")
    num_labels = len(label_names)
    paths = {"train": cfg.train_path} if cfg.trains else {}
    paths.update(dev=cfg.dev, test=cfg.test)
    rows = {name: len(read_examples(path, num_labels)) for name, path in paths.items()}
    if cfg.trains:
        check_warmup(cfg.training, -(-rows["train"] // cfg.training.batch_size))
    if cfg.export_peft and cfg.load_adapter:
        check_saved_exportable(cfg.load_adapter[0])
    if cfg.export_adapterhub and cfg.load_adapter:
        check_saved_adapterhub_exportable(cfg.load_adapter[0])
    adapter = cfg.adapter_path
    curves = curves_path(cfg.outputs["dev"]) if cfg.trains else None
    check_distinct_paths({**{f"--{k}": v for k, v in paths.items()}, "--dev_out": cfg.outputs["dev"],
                          "--test_out": cfg.outputs["test"], "--save_adapter (.json)": adapter and adapter + ".json",
                          "--save_adapter (.safetensors)": adapter and adapter + ".safetensors",
                          "--log_jsonl": cfg.log_jsonl, "curves (beside --dev_out)": curves,
                          "--checkpoint_dir (checkpoint.pt)": cfg.training.checkpoint_dir
                          and os.path.join(cfg.training.checkpoint_dir, "checkpoint.pt")})
    check_all_writable({"--dev_out": cfg.outputs["dev"], "--test_out": cfg.outputs["test"],
                        "--save_adapter": adapter and adapter + ".json", "--log_jsonl": cfg.log_jsonl,
                        "curves (beside --dev_out)": curves})
    check_export_dir(cfg.export_peft)
    check_adapterhub_dir(cfg.export_adapterhub)

    model, tokenizer = run_cfg.load()
    print(f"load model from {run_cfg.model_path}")
    backbone, head_state = build_backbone(cfg, model, tokenizer)
    classifier = build_classifier(cfg, backbone, tokenizer, label_names, head_state, names_from).to(run_cfg.device)
    if cfg.trains:
        print(describe_method(cfg, classifier))
        print(describe_trainable(classifier))
    suffix = course_prompt(label_names) if isinstance(classifier, VerbalizerClassifier) else None
    shots = demonstrations(read_examples(cfg.train_path, num_labels), label_names, cfg.k_shot, run_cfg.seed) \
        if cfg.k_shot else ""
    if cfg.k_shot:
        print(f"in-context learning: {cfg.k_shot} labelled examples of {cfg.train_path} (balanced across the "
              f"labels, chosen with --seed {run_cfg.seed}) before each sentence")
    # the backbone's context: a prefix of P virtual tokens leaves P fewer for the input
    max_len = context_budget(backbone, tokenizer, classifier, suffix, cfg.max_sentence_len, shots, cfg.k_shot)
    splits = {name: load_split(path, tokenizer, num_labels, max_len, suffix, shots) for name, path in paths.items()}
    for split in splits.values():
        print(f"load {len(split)} data from {split.path}")
    note_cut_sentences(splits, tokenizer, max_len, cfg.max_sentence_len)
    if getattr(classifier, "cache", None) is not None:
        cache_features(classifier, splits, cfg.training.batch_size, run_cfg)

    with RunLog(cfg.log_jsonl, cfg.wandb, job=f"classify-{cfg.option}") as log:
        if cfg.trains:
            history = fit(classifier, splits["train"], splits["dev"], cfg.training, run_cfg,
                          on_epoch=lambda r: log.log("epoch", epoch=r.epoch, train_loss=r.train_loss,
                                                     train_acc=r.train_acc, dev_acc=r.dev_acc),
                          fingerprint=fingerprint(run_cfg, cfg))
            plot_curves(history, curves, f"{cfg.option} on {cfg.dataset}", cfg.training.min_delta)
            print(f"wrote training curves to {curves}")
        finish(cfg, classifier, label_names, run_cfg.model_path)
        results = {}
        for name in ("dev", "test"):
            split = splits[name]
            preds = predict(classifier, split, cfg.training.batch_size, run_cfg.device, run_cfg.bf16,
                            run_cfg.progress, desc=name)
            results[name] = (preds, accuracy(preds, split.labels))
        for name in ("dev", "test"):
            preds, acc = results[name]
            write_predictions(cfg.outputs[name], preds.tolist(), splits[name].sentences)
            print(f"{name} acc :: {acc:.3f}")
            print(f"wrote {name} predictions to {cfg.outputs[name]}")
        log.log("eval", **{f"{name}_acc": acc for name, (_, acc) in results.items()})
    note = placeholder_note(cfg.test, splits["test"].labels)
    if note:
        print(note)
    return {name: acc for name, (_, acc) in results.items()}


# -- several adapters, each on its own files, in one pass -----------------------------------
def mixed_label_names(cfg: ClassifyConfig, adapters: Dict[str, nn.Module]) -> Dict[str, List[str]]:
    """--label-names with one file per adapter, else the names each adapter file saved."""
    names = cfg.adapter_names
    if cfg.label_names:
        return {n: read_label_names(p) for n, p in zip(names, per_name(cfg.label_names, names, "--label-names"))}
    out = {}
    for name, path in zip(names, cfg.load_adapter):
        saved = adapters[name].adapter_meta.get("label_names")
        if not saved:
            raise MinillamaError(f"adapter {path} holds no label names: give --label-names with one file per "
                                 f"adapter ({','.join(names)})")
        out[name] = saved
    return out


def run_mixed(run_cfg: RunConfig, cfg: ClassifyConfig) -> Dict[str, Dict[str, float]]:
    """Evaluate --load_adapter A B ... (named --adapter_names) on their own dev/test files,
    in batches whose rows mix every adapter.  Returns {name: {"dev": acc, "test": acc}}."""
    from ..adapters.multi import MultiAdapter
    names = cfg.adapter_names
    files = {"dev": per_name(cfg.dev, names, "--dev"), "test": per_name(cfg.test, names, "--test")}
    outs = {split: per_name(getattr(cfg, f"{split}_out"), names, f"--{split}_out") if getattr(cfg, f"{split}_out")
            else [f"{n}-{split}-prefix-output.txt" for n in names] for split in files}
    for paths in files.values():
        for path in paths:
            read_examples(path)  # malformed files fail before the model loads
    check_distinct_paths(mixed_run_paths(names, files, outs, cfg.load_adapter))
    check_all_writable({f"--{split}_out": path for split in outs for path in outs[split]})

    model, tokenizer = run_cfg.load()
    print(f"load model from {run_cfg.model_path}")
    adapters = {n: load_adapter(model, p, tokenizer) for n, p in zip(names, cfg.load_adapter)}
    labels = mixed_label_names(cfg, adapters)
    multi = MultiAdapter(model, adapters).to(run_cfg.device).eval()
    readers = {}
    for name, adapter in adapters.items():
        if adapter.head_state:
            if adapter.head_state["weight"].shape[0] != len(labels[name]):
                raise MinillamaError(f"adapter {name}'s head has {adapter.head_state['weight'].shape[0]} labels but "
                                     f"its label names are {len(labels[name])}: give that adapter's --label-names")
            head = nn.Linear(model.config.dim, adapter.head_state["weight"].shape[0])
            head.load_state_dict(adapter.head_state)
            readers[name] = head
        else:
            readers[name] = label_token_ids(tokenizer, labels[name])
    pools = {name: POOL_OF_HEAD.get(saved_head(a, a.head_state)) for name, a in adapters.items()}
    reader = RowReader(multi, readers, pools).to(run_cfg.device)
    splits = row_splits(reader, tokenizer, model.input_room - max(multi.lengths), labels, files, cfg.max_sentence_len)
    for i, name in enumerate(names):
        print(f"adapter {name} ({adapters[name].method}, {cfg.load_adapter[i]}): "
              f"{reader_kind(reader, name)}, dev {files['dev'][i]} "
              f"({len(splits[name, 'dev'])}), test {files['test'][i]} ({len(splits[name, 'test'])})")
    # one stream of (adapter, split, example), adapters taking turns, so every batch mixes them
    streams = [[(key, j) for key in splits if key[0] == name for j in range(len(splits[key]))] for name in names]
    order = [s[turn] for turn in range(max(map(len, streams))) for s in streams if turn < len(s)]
    preds = {key: torch.empty(len(split), dtype=torch.long) for key, split in splits.items()}
    with torch.no_grad():
        for start in range(0, len(order), cfg.training.batch_size):
            chunk = order[start:start + cfg.training.batch_size]
            ids, mask = pad_batch([splits[key].token_ids[j] for key, j in chunk], tokenizer.pad_id)
            scores = reader(ids.to(run_cfg.device), mask.to(run_cfg.device), [key[0] for key, _ in chunk])
            for (key, j), row in zip(chunk, scores):
                preds[key][j] = int(row.argmax())
    return write_row_results(names, files, outs, splits, preds)
