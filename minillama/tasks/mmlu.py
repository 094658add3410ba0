"""`run_llama.py --option mmlu`: multiple-choice accuracy on MMLU, and
`--option prefix --task mmlu` (`run_prefix_mmlu`): a prefix trained on MMLU.

Two ways to read the model's answer (--mmlu_mode):
- "logits" (default, fast, no generation): the next-token logits of the four
  answer-letter tokens after the prompt; the prediction is their argmax, so
  this mode never refuses.  Batched with left padding, so one forward pass with
  last_only=True reads every row's last prompt position.
- "generate": greedy decoding of a few tokens (--mmlu_new_tokens), parsed for
  the first valid answer letter ("A", "(A)", "Answer: A", "The answer is A" ...);
  no letter is a *refusal*, counted as wrong and reported as the refusal rate.

Reported: accuracy per subject, micro (over all questions: "overall") and
macro (mean of the subject accuracies), the refusal rate; a table on stdout
and, with --mmlu_out, a JSON report (or, for a .jsonl path, one record per
question followed by the summary), written atomically.
"""
from __future__ import annotations

import json
import re
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from .. import mmlu_data
from ..data import Split, left_pad, pad_batch, pad_left
from ..errors import MinillamaError
from ..files import atomic_write_text, check_writable
from ..sampling import strip_after_stop
from ..train import autocast
from . import load_from_args
from ..mmlu_data import LETTERS, Question

DEFAULT_NEW_TOKENS = 10  # room for "The answer is (B)." and similar
DEFAULT_ADAPTER = "mmlu-prefix-adapter"  # --save_adapter default for --task mmlu (+ .safetensors/.json)


# -- letter tokens ----------------------------------------------------------------------
def _continuation_id(tokenizer, context: str, letter: str) -> Tuple[int, bool]:
    """(id of `letter` as it follows `context`, whether that is one exact token).

    Encoding context and context+letter and taking the new tail is robust to
    tokenizers that merge the space into the letter (Llama 2/3: " A" is one token)
    or not.  When the tail has several tokens (tiny vocabularies split "▁" and
    "A") the letter's own last token is used, an approximation."""
    ctx = tokenizer.encode(context, bos=False, eos=False)
    full = tokenizer.encode(context + letter, bos=False, eos=False)
    tail = full[len(ctx):] if full[:len(ctx)] == ctx else full[-1:]
    return full[-1], len(tail) == 1 and full[:len(ctx)] == ctx


def letter_token_ids(tokenizer, chat: bool = False) -> List[int]:
    """Ids of the tokens " A".." D" that follow "Answer:" (base prompts), or of
    "A".."D" opening the assistant's reply (chat prompts): [4] distinct ids."""
    context, space = ("", "") if chat else ("Answer:", " ")
    found = [_continuation_id(tokenizer, context, space + letter) for letter in LETTERS]
    ids = [i for i, _ in found]
    if len(set(ids)) != len(LETTERS):
        raise MinillamaError(f"the tokenizer maps the answer letters A-D to ids {ids}, not 4 distinct tokens: "
                             "it cannot score MMLU by letter logits (use --mmlu_mode generate)")
    if not all(exact for _, exact in found):
        warnings.warn(f"this tokenizer splits '{space}A'..'{space}D' into several tokens; scoring uses the "
                      "letters' last tokens (approximate; exact for Llama 2/3 tokenizers)")
    return ids


# -- prompts as ids ---------------------------------------------------------------------
def encode_prompt(tokenizer, q: Question, shots: Sequence[Question], chat: bool) -> List[int]:
    if not chat:
        return tokenizer.encode(mmlu_data.build_prompt(q, shots), bos=True, eos=False)
    message = mmlu_data.build_chat_message(q, shots)
    return list(tokenizer.format_chat([{"role": "user", "content": message}], add_generation_prompt=True))


def encode_questions(tokenizer, questions: Sequence[Question], dev: Dict[str, List[Question]], k_shot: int,
                     chat: bool, max_len: int) -> Tuple[List[List[int]], Dict[str, int]]:
    """Prompt ids per question, and counts of prompts that had to be shortened:
    {"fewer_shots": ..., "truncated": ...}.

    As in hendrycks/test, a prompt longer than max_len drops exemplars (k -> k-1)
    until it fits; a zero-shot prompt still too long keeps BOS and its last
    max_len - 1 tokens (only tiny-context models need this)."""
    if chat and not hasattr(tokenizer, "format_chat"):
        raise MinillamaError(f"--chat needs a Llama 3 tokenizer with a chat format; {tokenizer.family} "
                             "tokenizers have none: drop --chat or use a Llama 3.2 Instruct directory")
    out, stats = [], {"fewer_shots": 0, "truncated": 0}
    for q in questions:
        # exemplars come from dev; never the question itself (when evaluating on dev)
        pool = [s for s in dev.get(q.subject, []) if s != q][:k_shot]
        if len(pool) < k_shot:
            raise MinillamaError(f"--k_shot {k_shot}: subject {q.subject} has only {len(pool)} dev exemplars "
                                 "(MMLU's dev split holds 5 per subject)")
        k = k_shot
        ids = encode_prompt(tokenizer, q, pool[:k], chat)
        while len(ids) > max_len and k > 0:
            k -= 1
            ids = encode_prompt(tokenizer, q, pool[:k], chat)
        stats["fewer_shots"] += k < k_shot
        if len(ids) > max_len:
            ids = ids[:1] + ids[len(ids) - max_len + 1:]
            stats["truncated"] += 1
        out.append(ids)
    return out, stats


def length_sorted_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> List[List[int]]:
    """Indices grouped in batches of similar length (less padding), longest first
    (an out-of-memory error then comes at once, not at the end)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


# -- scoring: logits ----------------------------------------------------------------------
class LetterClassifier(nn.Module):
    """scores [B, 4] = the backbone's next-token logits of the four letter tokens
    after each prompt.  Input rows are right-padded (as data.Split batches them);
    they are re-aligned to the left so one last_only pass reads every row's last
    prompt token.
    A backbone is a Llama or anything shaped like it (PrefixModel):
    forward(ids, mask, last_only=True) -> (logits [B, 1, V], hidden)."""

    def __init__(self, backbone: nn.Module, letter_ids: Sequence[int]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("letter_ids", torch.tensor(list(letter_ids), dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids, mask = left_pad(input_ids, attention_mask)
        logits, _ = self.backbone(ids, mask, last_only=True)  # [B, 1, V]
        return logits[:, -1].index_select(-1, self.letter_ids.to(logits.device)).float()


@torch.no_grad()
def score_logits(model: nn.Module, prompts: Sequence[Sequence[int]], letter_ids: Sequence[int], pad_id: int,
                 batch_size: int = 8, device=None, bf16: bool = False, progress: bool = True) -> torch.Tensor:
    """Letter logits for every prompt, in input order: [N, 4]."""
    device = device or next(model.parameters()).device
    classifier = LetterClassifier(model, letter_ids)
    scores = torch.empty(len(prompts), len(letter_ids))
    for idx in tqdm(length_sorted_batches(prompts, batch_size), desc="mmlu", disable=not progress, leave=False):
        ids, mask = pad_batch([prompts[i] for i in idx], pad_id)  # right-padded, as the classifier expects
        with autocast(device, bf16):
            scores[idx] = classifier(ids.to(device), mask.to(device)).cpu()
    return scores


# -- scoring: generation ------------------------------------------------------------------
_LETTER = r"[\(\[]?([ABCD])(?![A-Za-z0-9])"
# Where an answer letter may stand, earliest match wins:
ANSWER_PATTERNS = [
    # the reply opens with the letter alone: "A", "A.", "(A)", "B) text", "C - text"; not "A cat"
    re.compile(r"^\s*[\(\[]?([ABCD])(?=[\)\]\.:,]|\s*$|\s*\n|\s+[-(])"),
    re.compile(r"(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*" + _LETTER),  # "Answer: A", "the answer is (C)"
    re.compile(r"\(([ABCD])\)"),                                      # "... option (B) ..."
    re.compile(r"(?m)^\s*([ABCD])[.)](?:\s|$)"),                      # a line "D. text"
]


def parse_answer(text: str) -> Optional[str]:
    """The first valid answer letter in a generated reply, or None (a refusal).
    Markdown emphasis is ignored ("**B**" reads as "B"); a capital A used as a
    word ("A cat ...") is not an answer."""
    text = text.replace("*", "")
    best = None
    for pattern in ANSWER_PATTERNS:
        m = pattern.search(text)
        if m and (best is None or m.start(1) < best.start(1)):
            best = m
    return best.group(1) if best else None


@torch.no_grad()
def generate_replies(model: nn.Module, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                     batch_size: int = 8, device=None, bf16: bool = False, progress: bool = True) -> List[str]:
    """Greedy replies (decoded text, stop token excluded) for every prompt, in input order."""
    from ..sampling import generate
    device = device or next(model.parameters()).device
    replies: List[Optional[str]] = [None] * len(prompts)
    for idx in tqdm(length_sorted_batches(prompts, batch_size), desc="mmlu generate", disable=not progress,
                    leave=False):
        ids, mask = pad_left([prompts[i] for i in idx], tokenizer.pad_id)
        with autocast(device, bf16):
            out = generate(model, ids.to(device), max_new_tokens, temperature=0.0, eos_id=tokenizer.stop_ids,
                           attention_mask=mask.to(device))
        for row, i in enumerate(idx):
            replies[i] = tokenizer.decode(strip_after_stop(out[row, ids.shape[1]:].tolist(), tokenizer.stop_ids))
    return replies


# -- the report -------------------------------------------------------------------------
def summarize(questions: Sequence[Question], predictions: Sequence[Optional[str]]) -> Dict:
    """Per-subject and overall counts.  micro: correct / questions over all
    subjects (the "overall" accuracy, weighted by subject size); macro: the
    unweighted mean of the subject accuracies.  A None prediction is a refusal
    (and wrong)."""
    per: Dict[str, Dict] = {}
    for q, pred in zip(questions, predictions):
        s = per.setdefault(q.subject, {"n": 0, "correct": 0, "refusals": 0})
        s["n"] += 1
        s["correct"] += int(pred == q.answer)
        s["refusals"] += int(pred is None)
    for s in per.values():
        s["accuracy"] = s["correct"] / s["n"]
        s["refusal_rate"] = s["refusals"] / s["n"]
    n = sum(s["n"] for s in per.values())
    correct = sum(s["correct"] for s in per.values())
    refusals = sum(s["refusals"] for s in per.values())
    micro = correct / n if n else float("nan")
    return {"n": n, "correct": correct, "accuracy": micro, "micro_accuracy": micro,
            "macro_accuracy": sum(s["accuracy"] for s in per.values()) / len(per) if per else float("nan"),
            "refusals": refusals, "refusal_rate": refusals / n if n else float("nan"),
            "subjects": dict(sorted(per.items()))}


def format_table(report: Dict) -> str:
    width = max([len(s) for s in report["subjects"]] + [len("macro (mean of subjects)")])
    lines = [f"{'subject':<{width}}  {'n':>6}  {'acc':>6}  {'refusal':>7}"]
    for name, s in report["subjects"].items():
        lines.append(f"{name:<{width}}  {s['n']:>6}  {s['accuracy']:>6.3f}  {s['refusal_rate']:>7.3f}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'micro (all questions)':<{width}}  {report['n']:>6}  {report['micro_accuracy']:>6.3f}  "
                 f"{report['refusal_rate']:>7.3f}")
    lines.append(f"{'macro (mean of subjects)':<{width}}  {len(report['subjects']):>6}  "
                 f"{report['macro_accuracy']:>6.3f}")
    return "\n".join(lines)


def write_report(path: str, report: Dict, records: Optional[Sequence[Dict]] = None):
    """A .jsonl path: one line per question, then {"summary": report}; else one JSON document."""
    if path.endswith(".jsonl"):
        lines = [json.dumps(r) + "\n" for r in (records or [])] + [json.dumps({"summary": report}) + "\n"]
    else:
        lines = [json.dumps(report, indent=1) + "\n"]
    atomic_write_text(path, "".join(lines))


# -- evaluation -------------------------------------------------------------------------
def evaluate(model: nn.Module, tokenizer, questions: Sequence[Question], dev: Dict[str, List[Question]], *,
             mode: str = "logits", k_shot: int = 0, chat: bool = False, batch_size: int = 8,
             max_new_tokens: int = DEFAULT_NEW_TOKENS, device=None, bf16: bool = False,
             progress: bool = True) -> Tuple[Dict, List[Dict]]:
    """(report, per-question records) of `model` on `questions`; mode 'logits' or 'generate'."""
    if mode not in ("logits", "generate"):
        raise MinillamaError(f"--mmlu_mode must be logits or generate, got {mode!r}")
    if not questions:
        raise MinillamaError("no MMLU questions selected (check --subjects, --limit and --mmlu_split)")
    room = model.input_room - (max_new_tokens if mode == "generate" else 0)
    if room < 8:
        raise MinillamaError(f"the model's context ({model.input_room} tokens) leaves no room for a "
                             f"question: lower --mmlu_new_tokens or --prefix_length")
    prompts, shortened = encode_questions(tokenizer, questions, dev, k_shot, chat, room)
    start = time.time()
    records = []
    if mode == "logits":
        scores = score_logits(model, prompts, letter_token_ids(tokenizer, chat), tokenizer.pad_id, batch_size,
                              device, bf16, progress)
        predictions = [LETTERS[i] for i in scores.argmax(dim=-1).tolist()]
        extra = [{"scores": [round(x, 4) for x in row]} for row in scores.tolist()]
    else:
        replies = generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size, device, bf16, progress)
        predictions = [parse_answer(r) for r in replies]
        extra = [{"reply": r} for r in replies]
    seconds = time.time() - start
    for q, pred, more in zip(questions, predictions, extra):
        records.append({"subject": q.subject, "source": q.source, "answer": q.answer, "prediction": pred,
                        "correct": pred == q.answer, "refused": pred is None, **more})
    report = summarize(questions, predictions)
    report.update({"mode": mode, "k_shot": k_shot, "chat": chat, **shortened, "seconds": round(seconds, 3),
                   "questions_per_second": round(len(questions) / max(seconds, 1e-9), 2)})
    return report, records


def load_questions(args, split: str) -> Dict[str, List[Question]]:
    available = mmlu_data.list_subjects(args.mmlu_dir, split)
    subjects = mmlu_data.parse_subjects(getattr(args, "subjects", None), available)
    return mmlu_data.load_split(args.mmlu_dir, split, subjects, getattr(args, "limit", None))


def load_dev(args) -> Dict[str, List[Question]]:
    """dev exemplars for k-shot prompts (only read when k_shot > 0)."""
    if not getattr(args, "k_shot", 0):
        return {}
    available = mmlu_data.list_subjects(args.mmlu_dir, "dev")
    return mmlu_data.load_split(args.mmlu_dir, "dev", mmlu_data.parse_subjects(getattr(args, "subjects", None),
                                                                                available))


def eval_kwargs(args) -> Dict:
    return dict(k_shot=getattr(args, "k_shot", 0), chat=getattr(args, "chat", False), batch_size=args.batch_size,
                max_new_tokens=getattr(args, "mmlu_new_tokens", DEFAULT_NEW_TOKENS), device=args.device,
                bf16=getattr(args, "bf16", False))


def open_wandb(args, job: str):
    """A wandb run when --wandb is given and the package is installed; else None (with a note)."""
    if not getattr(args, "wandb", False):
        return None
    try:
        import wandb
    except ImportError:
        print("--wandb: the wandb package is not installed (pip install wandb); continuing without it",
              file=sys.stderr)
        return None
    return wandb.init(project="minillama", job_type=job, config={k: str(v) for k, v in vars(args).items()})


def append_jsonl(path: Optional[str], record: Dict):
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def run(args):
    """--option mmlu: evaluate --pretrained-model-path (plus --load_adapter) on --mmlu_split."""
    check_writable(getattr(args, "mmlu_out", None), "--mmlu_out")
    check_writable(getattr(args, "log_jsonl", None), "--log_jsonl")
    split = getattr(args, "mmlu_split", "test")
    questions = mmlu_data.flatten(load_questions(args, split))
    dev = load_dev(args)
    model, tokenizer = load_from_args(args)
    if getattr(args, "load_adapter", None):  # evaluate a saved prefix (two: --interpolate)
        model = make_prefix_backbone(args, model, tokenizer).eval()
    print(f"load model from {args.pretrained_model_path}; MMLU {split}: {len(questions)} questions, "
          f"{getattr(args, 'k_shot', 0)}-shot, mode {getattr(args, 'mmlu_mode', 'logits')}")
    report, records = evaluate(model, tokenizer, questions, dev, mode=getattr(args, "mmlu_mode", "logits"),
                               **eval_kwargs(args))
    report.update({"model": args.pretrained_model_path, "split": split})
    print(format_table(report))
    print(f"mmlu {split} acc :: {report['accuracy']:.3f} (macro {report['macro_accuracy']:.3f}, "
          f"refusal rate {report['refusal_rate']:.3f})")
    if getattr(args, "mmlu_out", None):
        write_report(args.mmlu_out, report, records)
        print(f"wrote MMLU report to {args.mmlu_out}")
    summary = {k: v for k, v in report.items() if k != "subjects"}
    append_jsonl(getattr(args, "log_jsonl", None), {"event": "eval", **summary})
    run_ = open_wandb(args, "mmlu-eval")
    if run_ is not None:
        run_.log({f"mmlu/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
        run_.finish()
    return report


# -- prefix training on MMLU (--option prefix --task mmlu) ---------------------------------
# Training data.  MMLU's auxiliary_train split is not in the mirror, and test must stay
# untouched for the final numbers, so the prefix trains on val (1531 questions, the split
# MMLU provides for tuning), with --mmlu_holdout of each subject held out for early
# stopping; dev keeps its role as the pool of k-shot exemplars (never a training target).
def split_holdout(by_subject: Dict[str, List[Question]], fraction: float,
                  seed: int) -> Tuple[List[Question], List[Question]]:
    """(train, held-out): per subject a seeded shuffle, round(fraction * n) questions
    (at least one when the subject has two or more) held out, so every subject is
    represented in both."""
    import random
    if not 0.0 < fraction < 1.0:
        raise MinillamaError(f"--mmlu_holdout must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    train, held = [], []
    for subject, questions in by_subject.items():
        order = list(questions)
        rng.shuffle(order)
        n_held = min(max(1, round(fraction * len(order))), len(order) - 1) if len(order) > 1 else 0
        held += order[:n_held]
        train += order[n_held:]
    if not train or not held:
        raise MinillamaError("too few val questions to train and hold out (raise --limit or select more --subjects)")
    return train, held


def make_split(questions: Sequence[Question], prompts: List[List[int]], pad_id: int, name: str) -> Split:
    """The shared training loop's Split: questions as examples, labels = answer index."""
    return Split(questions, prompts, pad_id, name)


def make_prefix_backbone(args, model, tokenizer):
    """A fresh PrefixModel from the prefix flags, or (--load_adapter) the saved
    adapter to evaluate: with two paths and --interpolate ALPHA, alpha*A + (1-alpha)*B."""
    from ..prefix import PrefixModel, interpolate, load_adapter
    paths = getattr(args, "load_adapter", None)
    if paths:
        alpha = getattr(args, "interpolate", None)
        if len(paths) > 2 or (len(paths) == 2) != (alpha is not None):
            raise MinillamaError("--load_adapter takes one path, or two with --interpolate ALPHA")
        adapters = [load_adapter(model, path) for path in paths]
        return adapters[0] if len(adapters) == 1 else interpolate(adapters[0], adapters[1], alpha)
    return PrefixModel(model, args.prefix_mode, args.prefix_length,
                       reparam=False if args.no_reparam else None, prefix_hidden=args.prefix_hidden,
                       init=args.prefix_init, init_text=args.prefix_init_text, tokenizer=tokenizer)


def side_by_side(results: Dict[str, Dict[str, Dict]]) -> str:
    """Baseline vs tuned, one line per (mode, metric)."""
    lines = [f"{'test':<28}  {'baseline':>8}  {'tuned':>8}"]
    for mode in results["baseline"]:
        b, t = results["baseline"][mode], results["tuned"][mode]
        for key in ("micro_accuracy", "macro_accuracy", "refusal_rate"):
            lines.append(f"{mode + ' ' + key:<28}  {b[key]:>8.3f}  {t[key]:>8.3f}")
    return "\n".join(lines)


def run_prefix_mmlu(args):
    """Train a prefix (--prefix_mode prefix | prompt | ptuning2) on MMLU val with the
    answer-letter loss (cross-entropy over the 4 letter logits at the last prompt
    position), early stopping on the held-out part of val (--patience, --min_delta),
    AdamW with --weight_decay; then test accuracy and refusal rate, baseline (the
    frozen model alone) vs tuned, in logits mode and, with --mmlu_mode generate,
    also by generation.  With --load_adapter nothing trains: the saved prefix is
    evaluated against the baseline."""
    from ..prefix import parameter_counts, save_adapter
    from ..train import TrainConfig, fit

    for flag in ("mmlu_out", "log_jsonl", "save_adapter"):
        check_writable(getattr(args, flag, None), f"--{flag}")
    if getattr(args, "prefix_length", 1) <= 0 and not getattr(args, "load_adapter", None):
        raise MinillamaError(f"--prefix_length must be a positive number of virtual tokens, got {args.prefix_length}")
    if args.patience is not None and args.patience <= 0:
        raise MinillamaError(f"--patience must be a positive number of epochs, got {args.patience}")
    train_q, held_q = split_holdout(load_questions(args, "val"), getattr(args, "mmlu_holdout", 0.2), args.seed)
    test_q = mmlu_data.flatten(load_questions(args, "test"))
    dev = load_dev(args)
    model, tokenizer = load_from_args(args)
    print(f"load model from {args.pretrained_model_path}; MMLU: train {len(train_q)} / held-out {len(held_q)} "
          f"(val), test {len(test_q)}")
    kw = eval_kwargs(args)
    modes = ["logits"] + (["generate"] if getattr(args, "mmlu_mode", "logits") == "generate" else [])
    results: Dict[str, Dict[str, Dict]] = {"baseline": {}, "tuned": {}}
    records: Dict[str, List[Dict]] = {}
    for mode in modes:
        results["baseline"][mode], records[f"baseline_{mode}"] = evaluate(model, tokenizer, test_q, dev,
                                                                           mode=mode, **kw)

    backbone = make_prefix_backbone(args, model, tokenizer).to(args.device)
    counts = parameter_counts(backbone)
    print(f"prefix {backbone.mode}, length {backbone.length}: {counts['trainable']:,} trainable parameters "
          f"({100 * counts['share']:.4f}% of the model)")
    classifier = LetterClassifier(backbone, letter_token_ids(tokenizer, kw["chat"]))
    room = backbone.input_room
    splits = {}
    for name, qs in (("train", train_q), ("held-out", held_q)):
        prompts, _ = encode_questions(tokenizer, qs, dev, kw["k_shot"], kw["chat"], room)
        splits[name] = make_split(qs, prompts, tokenizer.pad_id, name)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                      patience=args.patience, min_delta=args.min_delta, bf16=kw["bf16"], device=args.device,
                      seed=args.seed)
    trains = not getattr(args, "load_adapter", None)
    history = fit(classifier, splits["train"], splits["held-out"], cfg) if trains else []
    backbone.eval()
    for mode in modes:
        results["tuned"][mode], records[f"tuned_{mode}"] = evaluate(backbone, tokenizer, test_q, dev, mode=mode, **kw)

    print(side_by_side(results))
    epochs = [{"event": "epoch", "epoch": h.epoch, "train_loss": h.train_loss, "train_acc": h.train_acc,
               "heldout_acc": h.dev_acc} for h in history]
    finals = [{"event": "test", "model": which, "mode": mode,
               **{k: v for k, v in results[which][mode].items() if k != "subjects"}}
              for which in results for mode in modes]
    if getattr(args, "log_jsonl", None):
        atomic_write_text(args.log_jsonl, "".join(json.dumps(r) + "\n" for r in epochs + finals))
    report = {"model": args.pretrained_model_path, "prefix_mode": backbone.mode, "prefix_length": backbone.length,
              "trainable_parameters": counts["trainable"],
              "data": {"train": "val minus held-out", "n_train": len(train_q), "n_heldout": len(held_q),
                       "n_test": len(test_q), "holdout": getattr(args, "mmlu_holdout", 0.2)},
              "history": epochs, "baseline": results["baseline"], "tuned": results["tuned"]}
    if getattr(args, "mmlu_out", None):
        write_report(args.mmlu_out, report, [dict(r, run=name) for name, rs in records.items() for r in rs])
        print(f"wrote MMLU report to {args.mmlu_out}")
    if trains:
        path = getattr(args, "save_adapter", None) or DEFAULT_ADAPTER
        size = save_adapter(backbone.fold(), path, extra={"task": "mmlu", "chat": kw["chat"], "k_shot": kw["k_shot"]})
        print(f"saved adapter to {path}.safetensors/.json ({size:,} bytes)")
    run_ = open_wandb(args, "mmlu-prefix")
    if run_ is not None:
        for r in epochs:
            run_.log({k: v for k, v in r.items() if k != "event"})
        for r in finals:
            run_.log({f"{r['model']}/{r['mode']}/{k}": v for k, v in r.items() if isinstance(v, (int, float))})
        run_.finish()
    return report
