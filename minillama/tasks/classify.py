"""`run_llama.py --option prompt | finetune | lora | prefix`: sentiment classification
on the course's SST-5 and CFIMDB files.

Each option = a backbone (the Llama, or an adapted one) + an answer reader:
- HeadClassifier: a linear head on the hidden state of the last real token
  (finetune, lora);
- VerbalizerClassifier: the LM's log-likelihood of each label name after the
  course prompt (prompt; multi-token names: sum of the tokens' log-probs).
A backbone is any module with
    forward(input_ids [B, T], attention_mask [B, T], last_only=False)
        -> (logits [B, T, vocab], hidden [B, T, dim]), or [B, 1, ...] when last_only
whose outputs line up with input_ids and which accepts left or right padding
(the core Llama does: positions count real tokens only).  Both readers
left-pad their batch, so one last_only pass reads every row's last real token.

OPTIONS maps each option to an OptionSpec whose `build` returns the classifier;
the training loop (minillama/train.py) and the output writing are shared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..data import left_pad, load_split, read_examples, read_label_names, write_predictions
from ..errors import MinillamaError
from ..files import check_writable
from ..lora import inject_lora, lora_parameter_count, merge_lora, parse_targets
from ..train import TrainConfig, accuracy, describe_trainable, fit, predict
from . import load_from_args

COURSE_PROMPT = "Is this movie {names}? This movie is "


def label_phrase(names: Sequence[str]) -> str:
    """'a or b' for two names, 'a, b, c, d, or e' for more (the course's wording)."""
    if len(names) == 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + ", or " + names[-1]


def course_prompt(names: Sequence[str]) -> str:
    return COURSE_PROMPT.format(names=label_phrase(names))


# -- answer readers ---------------------------------------------------------------------
class HeadClassifier(nn.Module):
    """logits [B, K] = W dropout(h_last) + b, h_last the last real token's final hidden state."""

    def __init__(self, backbone: nn.Module, dim: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T], right-padded -> logits [B, K]"""
        # Left-padded, every row's last real token is the last position, and last_only
        # spares the last block's queries, feed-forward and head for all other positions.
        ids, mask = left_pad(input_ids, attention_mask)
        _, hidden = self.backbone(ids, mask, last_only=True)  # [B, 1, dim]
        return self.head(self.dropout(hidden[:, -1]))


class VerbalizerClassifier(nn.Module):
    """scores [B, K] = log P(label name k | text) under the backbone's LM head,
    summed over the name's tokens (teacher-forced)."""

    def __init__(self, backbone: nn.Module, label_token_ids: Sequence[Sequence[int]]):
        super().__init__()
        if any(len(ids) == 0 for ids in label_token_ids):
            raise MinillamaError("a label name encodes to no tokens: use non-empty label names")
        self.backbone = backbone
        self.label_token_ids = [list(ids) for ids in label_token_ids]
        # positions the longest name adds after the text (for the context-length budget)
        self.extra_positions = max(len(ids) for ids in self.label_token_ids) - 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids, mask = left_pad(input_ids, attention_mask)
        B = ids.shape[0]
        scores = []
        first = None  # log-probs of the next token after the text, shared by every single-token name
        for label_ids in self.label_token_ids:
            if len(label_ids) == 1:
                if first is None:
                    logits, _ = self.backbone(ids, mask, last_only=True)
                    first = F.log_softmax(logits[:, -1].float(), dim=-1)
                scores.append(first[:, label_ids[0]])
                continue
            # text + all but the last name token; the last L positions predict the L name tokens
            L = len(label_ids)
            target = torch.tensor(label_ids, device=ids.device).expand(B, L)
            full_ids = torch.cat([ids, target[:, :-1]], dim=1)
            full_mask = torch.cat([mask, torch.ones_like(target[:, :-1], dtype=mask.dtype)], dim=1)
            logits, _ = self.backbone(full_ids, full_mask)
            logp = F.log_softmax(logits[:, -L:].float(), dim=-1)             # [B, L, vocab]
            scores.append(logp.gather(2, target[..., None]).squeeze(2).sum(dim=1))
        return torch.stack(scores, dim=1)


# -- options ------------------------------------------------------------------------------
@dataclass
class OptionSpec:
    word: str      # in the default output names: <dataset>-dev-<word>-output.txt
    build: Callable  # (args, model, tokenizer, label_names) -> classifier module
    trains: Union[bool, Callable]  # run the training loop before predicting (or: (args) -> bool)
    prompt: Union[bool, Callable]  # append the course prompt to every sentence (or: (args, classifier) -> bool)
    before_predict: Optional[Callable] = None  # (classifier, args, label_names) -> None, e.g. merge LoRA weights
    check: Optional[Callable] = None  # (args) -> None: the option's own flag checks


def option_trains(spec: OptionSpec, args) -> bool:
    return spec.trains(args) if callable(spec.trains) else spec.trains


def build_prompt(args, model, tokenizer, label_names):
    """Frozen LM, label names scored after the course prompt (encoded as the course does)."""
    model.requires_grad_(False)
    return VerbalizerClassifier(model, [tokenizer.encode(name, bos=False) for name in label_names])


def build_finetune(args, model, tokenizer, label_names):
    """Every weight trains, plus the head."""
    model.requires_grad_(True)
    return HeadClassifier(model, model.config.dim, len(label_names), args.hidden_dropout_prob)


def build_lora(args, model, tokenizer, label_names):
    """Frozen base, LoRA factors in --lora_targets of every block, trained head."""
    targets = parse_targets(args.lora_targets)
    injected = inject_lora(model, targets, args.lora_rank, args.lora_alpha, args.lora_dropout)
    n_lora = sum(m.lora_A.numel() + m.lora_B.numel() for m in injected)
    assert n_lora == lora_parameter_count(model.config, targets, args.lora_rank)
    print(f"LoRA: rank {args.lora_rank}, alpha {args.lora_alpha}, targets {','.join(targets)} "
          f"in {model.config.n_layers} layers: {n_lora:,} adapter parameters")
    return HeadClassifier(model, model.config.dim, len(label_names), args.hidden_dropout_prob)


# -- the prefix family (--option prefix) ----------------------------------------------------
# Default from bench/accuracy.py on stories260K (see README): the cls head was as accurate
# as the verbalizer there and trains 6-9x faster (one forward pass instead of one per
# multi-token label name); --prefix_head verbalizer keeps the whole task in the prefix.
DEFAULT_PREFIX_HEAD = "cls"


def prefix_head(args) -> str:
    return args.prefix_head or DEFAULT_PREFIX_HEAD


def prefix_trains(args) -> bool:
    """--load_adapter evaluates saved prefixes; otherwise a new one trains."""
    return not getattr(args, "load_adapter", None)


def reads_course_prompt(args, classifier) -> bool:
    """The verbalizer scores the label names as the continuation of the course prompt."""
    return isinstance(classifier, VerbalizerClassifier)


def default_adapter_path(args) -> str:
    """<dataset>-prefix-adapter next to the dev output."""
    dev_out, _ = output_paths(args, OPTIONS["prefix"].word)
    return os.path.join(os.path.dirname(dev_out), f"{dataset_name(args.train)}-prefix-adapter")


def check_prefix_args(args):
    if getattr(args, "load_adapter", None):
        n = len(args.load_adapter)
        if n > 2 or (n == 2) != (args.interpolate is not None):
            raise MinillamaError("--load_adapter takes one adapter, or two with --interpolate ALPHA "
                                 f"(got {n} adapter(s){'' if args.interpolate is None else ' and --interpolate'})")
        for path in args.load_adapter:
            for suffix in (".json", ".safetensors"):
                if not os.path.isfile(path + suffix):
                    raise MinillamaError(f"adapter file {path + suffix} not found: pass the --save_adapter "
                                         "path of a trained prefix (without the extension)")
        return
    if args.interpolate is not None:
        raise MinillamaError("--interpolate needs two adapters: --load_adapter A B --interpolate ALPHA")
    if args.prefix_length <= 0:
        raise MinillamaError(f"--prefix_length must be >= 1 to train a prefix, got {args.prefix_length} "
                             "(length 0 is the frozen model alone: --option prompt evaluates it)")
    if args.prefix_hidden <= 0:
        raise MinillamaError(f"--prefix_hidden must be a positive width, got {args.prefix_hidden}")
    if args.prefix_init == "text" and not args.prefix_init_text:
        raise MinillamaError("--prefix_init text needs --prefix_init_text \"some words\"")


def label_ids(tokenizer, label_names) -> List[List[int]]:
    """Each label name's tokens, encoded as the course's prompting does."""
    return [tokenizer.encode(name, bos=False) for name in label_names]


def prefix_classifier(args, backbone, tokenizer, label_names, head: str, head_state=None) -> nn.Module:
    if head == "verbalizer":
        return VerbalizerClassifier(backbone, label_ids(tokenizer, label_names))
    clf = HeadClassifier(backbone, backbone.config.dim, len(label_names), args.hidden_dropout_prob)
    if head_state:
        if head_state["weight"].shape[0] != len(label_names):
            raise MinillamaError(f"the adapter's head has {head_state['weight'].shape[0]} labels but "
                                 f"{args.label_names} names {len(label_names)}: use the adapter's data set")
        clf.head.load_state_dict(head_state)
    return clf


def loaded_prefix(args, model, tokenizer, label_names):
    """--load_adapter A [B --interpolate ALPHA]: the saved prefix (and head), frozen."""
    from ..prefix import interpolate, load_adapter
    adapters = [load_adapter(model, path) for path in args.load_adapter]
    heads = [a.head_state for a in adapters]
    if len({bool(h) for h in heads}) != 1:
        raise MinillamaError("cannot interpolate an adapter with a cls head and one without (verbalizer)")
    backbone, head_state = adapters[0], heads[0]
    if len(adapters) == 2:
        backbone = interpolate(adapters[0], adapters[1], args.interpolate)
        if head_state:
            head_state = {k: args.interpolate * heads[0][k] + (1 - args.interpolate) * heads[1][k] for k in head_state}
        print(f"prefix: {args.interpolate} x {args.load_adapter[0]} + {1 - args.interpolate:g} x {args.load_adapter[1]}")
    saved_names = adapters[0].adapter_meta.get("label_names")
    if saved_names and saved_names != label_names:
        print(f"note: the adapter was trained with label names {saved_names}, evaluating with {label_names}")
    backbone.requires_grad_(False)
    print(f"load adapter {', '.join(args.load_adapter)}: {backbone.mode}, length {backbone.length}, "
          f"head {'cls' if head_state else 'verbalizer'}")
    return prefix_classifier(args, backbone, tokenizer, label_names, "cls" if head_state else "verbalizer", head_state)


def build_prefix(args, model, tokenizer, label_names):
    """Frozen base + a trainable prefix (--prefix_mode), read by a cls head or the verbalizer."""
    from ..prefix import PrefixModel, parameter_counts
    if not prefix_trains(args):
        return loaded_prefix(args, model, tokenizer, label_names)
    backbone = PrefixModel(model, args.prefix_mode, args.prefix_length,
                           reparam=False if args.no_reparam else None, prefix_hidden=args.prefix_hidden,
                           init=args.prefix_init, init_text=args.prefix_init_text, tokenizer=tokenizer)
    classifier = prefix_classifier(args, backbone, tokenizer, label_names, prefix_head(args))
    counts = parameter_counts(backbone)
    head = sum(p.numel() for p in getattr(classifier, "head", nn.Identity()).parameters())
    reparam = f", reparameterized by a {args.prefix_hidden}-wide MLP" if backbone.reparam else ""
    print(f"prefix: mode {backbone.mode}, length {backbone.length}{reparam}, head {prefix_head(args)}: "
          f"{counts['trainable'] + head:,} trainable parameters ({counts['trainable']:,} prefix + {head:,} head) "
          f"= {100 * (counts['trainable'] + head) / counts['base']:.4f}% of the model's {counts['base']:,}")
    return classifier


def finish_prefix(classifier, args, label_names):
    """After training: fold the MLP away (keeping P only) and save the adapter."""
    from ..prefix import parameter_counts, save_adapter
    backbone = classifier.backbone
    if not prefix_trains(args):
        return
    backbone.fold()
    path = args.save_adapter or default_adapter_path(args)
    head_state = classifier.head.state_dict() if isinstance(classifier, HeadClassifier) else None
    nbytes = save_adapter(backbone, path, label_names, head_state,
                          extra={"prefix_head": "cls" if head_state else "verbalizer"})
    counts = parameter_counts(backbone)
    model_bytes = sum(p.numel() * p.element_size() for p in backbone.base.parameters())
    print(f"folded prefix: {counts['trainable']:,} parameters ({100 * counts['share']:.4f}% of the model); "
          f"saved adapter {path}.safetensors/.json: {nbytes:,} bytes vs {model_bytes:,} bytes of model weights "
          f"({100 * nbytes / model_bytes:.3f}%)")


OPTIONS: Dict[str, OptionSpec] = {
    "prompt": OptionSpec("prompting", build_prompt, trains=False, prompt=True),
    "finetune": OptionSpec("finetuning", build_finetune, trains=True, prompt=False),
    "lora": OptionSpec("lora", build_lora, trains=True, prompt=False,
                       before_predict=lambda classifier, args, names: merge_lora(classifier)),
    "prefix": OptionSpec("prefix", build_prefix, trains=prefix_trains, prompt=reads_course_prompt,
                         before_predict=finish_prefix, check=check_prefix_args),
}


# -- run --------------------------------------------------------------------------------
def dataset_name(train_path: str) -> str:
    """'data/sst-train.txt' -> 'sst' (the part of the file name before the first '-')."""
    stem = os.path.splitext(os.path.basename(train_path))[0]
    return stem.split("-")[0] or "data"


def output_paths(args, word: str):
    name = dataset_name(args.train)
    dev_out = args.dev_out or f"{name}-dev-{word}-output.txt"
    test_out = args.test_out or f"{name}-test-{word}-output.txt"
    return dev_out, test_out


def check_args(args, spec: OptionSpec):
    if not args.lr >= 0:
        raise MinillamaError(f"--lr must be >= 0, got {args.lr}")
    if args.option == "lora":
        if args.lora_rank <= 0:
            raise MinillamaError(f"--lora_rank must be a positive integer, got {args.lora_rank}")
        parse_targets(args.lora_targets)
    if not 0.0 <= args.hidden_dropout_prob < 1.0:
        raise MinillamaError(f"--hidden_dropout_prob must be in [0, 1), got {args.hidden_dropout_prob}")
    if args.patience is not None and args.patience <= 0:
        raise MinillamaError(f"--patience must be a positive number of epochs, got {args.patience}")
    if spec.check is not None:
        spec.check(args)


def placeholder_note(test_path: str, labels: torch.Tensor) -> Optional[str]:
    """CFIMDB's public test labels are placeholders (all the same value)."""
    if os.path.basename(test_path).startswith("cfimdb") or bool((labels == labels[0]).all()):
        return (f"note: the test labels of {test_path} are placeholders (all {int(labels[0])}), "
                "so test acc is meaningless; report dev acc")
    return None


def context_budget(model, tokenizer, classifier, suffix: Optional[str], max_sentence_len: Optional[int]) -> Optional[int]:
    """Sentence tokens that fit the model's context with BOS, the prompt and the
    label-name tokens; the smaller of that and --max_sentence_len."""
    extra = 1 + (len(tokenizer.encode(suffix, bos=False)) if suffix else 0) + getattr(classifier, "extra_positions", 0)
    fit_len = model.input_room - extra
    if fit_len <= 0:
        raise MinillamaError(f"the model's context ({model.input_room} tokens) is too short for the prompt")
    return fit_len if max_sentence_len is None else min(max_sentence_len, fit_len)


def run(args):

    if args.option == "prefix" and getattr(args, "task", "classify") == "mmlu":
        from .mmlu import run_prefix_mmlu
        return run_prefix_mmlu(args)
    spec = OPTIONS[args.option]
    check_args(args, spec)
    trains = option_trains(spec, args)
    device = getattr(args, "device", torch.device("cpu"))
    # every input and output check before the model loads
    label_names = read_label_names(args.label_names)
    num_labels = len(label_names)
    paths = {"train": args.train, "dev": args.dev, "test": args.test} if trains else \
        {"dev": args.dev, "test": args.test}
    for path in paths.values():
        read_examples(path, num_labels)
    dev_out, test_out = output_paths(args, spec.word)
    for path in (dev_out, test_out):
        check_writable(path)
    if args.option == "prefix" and trains:
        check_writable((args.save_adapter or default_adapter_path(args)) + ".json")

    model, tokenizer = load_from_args(args)
    print(f"load model from {args.pretrained_model_path}")
    classifier = spec.build(args, model, tokenizer, label_names).to(device)
    if trains:
        print(describe_trainable(classifier))
    prompt = spec.prompt(args, classifier) if callable(spec.prompt) else spec.prompt
    suffix = course_prompt(label_names) if prompt else None
    # the backbone's context: a prefix of P virtual tokens leaves P fewer for the input
    max_len = context_budget(classifier.backbone, tokenizer, classifier, suffix, args.max_sentence_len)
    splits = {name: load_split(path, tokenizer, num_labels, max_len, suffix) for name, path in paths.items()}
    for name, split in splits.items():
        print(f"load {len(split)} data from {split.path}")

    if trains:
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                          weight_decay=args.weight_decay, patience=args.patience, min_delta=args.min_delta,
                          bf16=args.bf16, device=device, seed=args.seed)
        fit(classifier, splits["train"], splits["dev"], cfg)
    if spec.before_predict is not None:
        spec.before_predict(classifier, args, label_names)

    results = {}
    for name in ("dev", "test"):
        split = splits[name]
        preds = predict(classifier, split, args.batch_size, device, args.bf16, desc=name)
        results[name] = (preds, accuracy(preds, split.labels))
    for name, out in (("dev", dev_out), ("test", test_out)):
        preds, acc = results[name]
        write_predictions(out, preds.tolist(), splits[name].sentences)
        print(f"{name} acc :: {acc:.3f}")
    note = placeholder_note(args.test, splits["test"].labels)
    if note:
        print(note)
    return {name: acc for name, (_, acc) in results.items()}
