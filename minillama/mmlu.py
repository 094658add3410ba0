"""MMLU scoring, shared by `--option mmlu` (tasks/mmlu_eval.py) and prefix training
on MMLU (tasks/mmlu_prefix.py): prompts as ids, two ways to read the answer, the report.

Two ways to read the model's answer (`MMLUSettings.mode`, --mmlu_mode):
- "logits" (default, fast, no generation): the next-token logits of the four
  answer-letter tokens after the prompt; the prediction is their argmax, so
  this mode never refuses.  Batched with left padding, so one forward pass with
  last_only=True reads every row's last prompt position (heads.VerbalizerClassifier
  with the letters as single-token label names).
- "generate": greedy decoding of a few tokens (--mmlu_new_tokens), parsed for
  the first valid answer letter ("A", "(A)", "Answer: A", "The answer is A" ...);
  no letter is a *refusal*, counted as wrong and reported as the refusal rate.

Reported: accuracy per subject, micro (over all questions: "overall") and
macro (mean of the subject accuracies), the refusal rate; a table, and a JSON
report (or, for a .jsonl path, one record per question followed by the summary).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from . import mmlu_data
from .data import pad_batch, pad_left
from .errors import MinillamaError, warn
from .fast import prepare_for_decoding
from .files import atomic_write_text
from .heads import VerbalizerClassifier
from .mmlu_data import LETTERS, Question
from .core.decoding import strip_after_stop
from .core.sampling import generate
from .flags import flag, same_flag
from .train import TrainConfig, autocast

MODES = ("logits", "generate")


@dataclass
class MMLUSettings:
    """Which questions, how they are prompted and how the answer is read."""

    mmlu_dir: str = flag("data/mmlu", "--mmlu_dir", readers="mmlu",
                         help="MMLU data with dev/ val/ test/ CSVs (default {default})")
    subjects: Optional[str] = flag(None, "--subjects", readers="mmlu",
                                   help="comma-separated MMLU subjects (default: all 57)")
    limit: Optional[int] = flag(None, "--limit", readers="mmlu", type=int,
                                help="at most this many questions per subject")
    k_shot: int = same_flag(0, "--k_shot", readers="mmlu")  # dev exemplars before each question
    mode: str = flag("logits", "--mmlu_mode", readers="mmlu", choices=MODES,
                     help="logits: compare the letter tokens' logits; generate: parse a greedy reply (refusals)")
    new_tokens: int = flag(10, "--mmlu_new_tokens", readers="mmlu",  # room for "The answer is (B)."
                           help="tokens generated in generate mode (default {default})")
    chat: bool = same_flag(False, "--chat", readers="mmlu")  # Llama 3 Instruct chat format
    batch_size: int = same_flag(TrainConfig.batch_size, "--batch_size", readers="batch")
    temperatures: Optional[Tuple[float, ...]] = flag(None, "--temperatures", readers="mmlu",
                                                     help="--mmlu_mode generate: also sample the answers at each "
                                                          "of these temperatures (e.g. 0,0.7,1.0): accuracy, refusal "
                                                          "rate, consistency and answer entropy per temperature")
    samples: int = flag(1, "--samples", readers="mmlu",
                        help="answers sampled per question at each temperature (default {default})")

    def __post_init__(self):
        if self.mode not in MODES:
            raise MinillamaError(f"--mmlu_mode must be logits or generate, got {self.mode!r}")
        if isinstance(self.temperatures, str):
            try:
                self.temperatures = tuple(float(t) for t in self.temperatures.split(","))
            except ValueError:
                raise MinillamaError(f"--temperatures takes numbers separated by commas (e.g. 0,0.7,1.0), "
                                     f"got {self.temperatures!r}") from None
        if self.temperatures is not None:
            if self.mode != "generate":
                raise MinillamaError("--temperatures samples the answers: it needs --mmlu_mode generate")
            if not self.temperatures or not all(0.0 <= t < math.inf for t in self.temperatures):
                raise MinillamaError(f"--temperatures must be finite numbers >= 0, got {self.temperatures}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise MinillamaError(f"--samples must be a positive number of answers per question, got {self.samples}")
        if self.samples > 1 and self.temperatures is None:
            raise MinillamaError("--samples draws answers at each of --temperatures: give --temperatures too")
        if not 0 <= self.k_shot <= 5:
            raise MinillamaError(f"--k_shot must be in 0..5 (MMLU's dev split holds 5 per subject), got {self.k_shot}")
        for name, value in (("--limit", self.limit), ("--mmlu_new_tokens", self.new_tokens),
                            ("--batch_size", self.batch_size)):
            if value is not None and value <= 0:
                raise MinillamaError(f"{name} must be a positive integer, got {value}")


def load_questions(s: MMLUSettings, split: str) -> Dict[str, List[Question]]:
    available = mmlu_data.list_subjects(s.mmlu_dir, split)
    return mmlu_data.load_split(s.mmlu_dir, split, mmlu_data.parse_subjects(s.subjects, available), s.limit)


def load_dev(s: MMLUSettings) -> Dict[str, List[Question]]:
    """dev exemplars for k-shot prompts (only read when k_shot > 0)."""
    if not s.k_shot:
        return {}
    return load_questions(MMLUSettings(s.mmlu_dir, s.subjects), "dev")


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
        warn(f"this tokenizer splits '{space}A'..'{space}D' into several tokens; scoring uses the "
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
# -- scoring: logits ----------------------------------------------------------------------
@torch.no_grad()
def score_logits(model: nn.Module, prompts: Sequence[Sequence[int]], letter_ids: Sequence[int], pad_id: int,
                 batch_size: int = MMLUSettings.batch_size, device=None, bf16: bool = False, progress: bool = True) -> torch.Tensor:
    """Letter logits for every prompt, in input order: [N, 4].  `model` is any backbone."""
    device = device or next(model.parameters()).device
    classifier = VerbalizerClassifier(model, [[i] for i in letter_ids], log_probs=False)
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
                     batch_size: int = MMLUSettings.batch_size, device=None, bf16: bool = False, progress: bool = True,
                     temperature: float = 0.0, generator: Optional[torch.Generator] = None) -> List[str]:
    """Replies (decoded text, stop token excluded) for every prompt, in input order: greedy, or
    sampled at `temperature` with `generator`."""
    device = device or next(model.parameters()).device
    replies: List[Optional[str]] = [None] * len(prompts)
    prepare_for_decoding(model)  # a sped-up model's decode layout (fast/layout.py)
    for idx in tqdm(length_sorted_batches(prompts, batch_size), desc="mmlu generate", disable=not progress,
                    leave=False):
        ids, mask = pad_left([prompts[i] for i in idx], tokenizer.pad_id)
        with autocast(device, bf16):
            out = generate(model, ids.to(device), max_new_tokens, temperature=temperature, eos_id=tokenizer.stop_ids,
                           attention_mask=mask.to(device), generator=generator)
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
             mode: str = MMLUSettings.mode, k_shot: int = MMLUSettings.k_shot, chat: bool = MMLUSettings.chat, batch_size: int = MMLUSettings.batch_size,
             max_new_tokens: int = MMLUSettings.new_tokens, device=None, bf16: bool = False,
             progress: bool = True) -> Tuple[Dict, List[Dict]]:
    """(report, per-question records) of `model` on `questions`; mode 'logits' or 'generate'."""
    if mode not in MODES:
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


def evaluate_with(model: nn.Module, tokenizer, questions: Sequence[Question], dev: Dict[str, List[Question]],
                  s: MMLUSettings, mode: Optional[str] = None, device=None, bf16: bool = False,
                  progress: bool = True) -> Tuple[Dict, List[Dict]]:
    """evaluate() with the settings of `s` (mode: s.mode unless given)."""
    return evaluate(model, tokenizer, questions, dev, mode=mode or s.mode, k_shot=s.k_shot, chat=s.chat,
                    batch_size=s.batch_size, max_new_tokens=s.new_tokens, device=device, bf16=bf16,
                    progress=progress)


# -- answers across temperatures ------------------------------------------------------------
def agreement(answers: Sequence[Optional[str]]) -> Tuple[bool, float]:
    """(all the sampled answers of one question agree, their entropy in bits); a refusal
    (None) counts as an answer of its own."""
    counts: Dict[Optional[str], int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    n = len(answers)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return len(counts) == 1, entropy + 0.0  # + 0.0: -0.0 when all agree


def temperature_sweep(model: nn.Module, tokenizer, questions: Sequence[Question], dev: Dict[str, List[Question]],
                      s: MMLUSettings, seed: int, device=None, bf16: bool = False, progress: bool = True) -> Dict:
    """At each of s.temperatures, s.samples answers per question (generate mode; sample i at
    temperature t drawn from a generator seeded with seed + i): accuracy and refusal rate over
    all the samples, consistency (the share of questions whose samples all agree) and the mean
    entropy of each question's answers.  {str(t): {...}}."""
    device = device or next(model.parameters()).device
    room = model.input_room - s.new_tokens
    prompts, _ = encode_questions(tokenizer, questions, dev, s.k_shot, s.chat, room)
    out = {}
    for t in s.temperatures:
        answers = []
        for i in range(s.samples):
            generator = torch.Generator(device=device).manual_seed(seed + i)
            replies = generate_replies(model, tokenizer, prompts, s.new_tokens, s.batch_size, device, bf16, progress,
                                       temperature=t, generator=generator)
            answers.append([parse_answer(r) for r in replies])
        per_question = [agreement(column) for column in zip(*answers)]
        total = len(questions) * s.samples
        out[f"{t:g}"] = {
            "temperature": t, "samples": s.samples,
            "accuracy": sum(a == q.answer for row in answers for a, q in zip(row, questions)) / total,
            "refusal_rate": sum(a is None for row in answers for a in row) / total,
            "consistency": sum(agree for agree, _ in per_question) / len(questions),
            "answer_entropy": sum(h for _, h in per_question) / len(questions)}
    return out


def format_sweep(sweep: Dict) -> str:
    lines = [f"{'temperature':>11}  {'samples':>7}  {'acc':>6}  {'refusal':>7}  {'consistency':>11}  {'entropy':>7}"]
    for row in sweep.values():
        lines.append(f"{row['temperature']:>11g}  {row['samples']:>7}  {row['accuracy']:>6.3f}  "
                     f"{row['refusal_rate']:>7.3f}  {row['consistency']:>11.3f}  {row['answer_entropy']:>7.3f}")
    return "\n".join(lines)
