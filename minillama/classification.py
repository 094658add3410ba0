"""What the classification tasks share (tasks/classify.py, tasks/multitask.py): the course
prompt, the answer readers' names and checks, and the rows of several named sets of files read
in one pass (`--load_adapter A B --adapter_names a,b` evaluating, `--task_names a,b` training):
comma lists with one entry per name, each name's splits read its own way, and its predictions
and `name: dev acc :: ` lines.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .data import Split, load_split, write_predictions
from .errors import MinillamaError
from .heads import RowReader
from .train import accuracy

COURSE_PROMPT = "Is this movie {names}? This movie is "
# What --option prefix trains for classification when neither --prefix_mode nor --prefix_hidden
# is given: P-tuning v2 with its classification settings (PrefixConfig.task_settings), read
# through the mean of all real tokens' states, not the last one's (every position passes on the
# prefix's gradient: a steadier signal; the SST runs in RESULTS.md).  Every prefix mode's head.
PREFIX_MODE = "ptuning2"
PREFIX_HEAD = "mean"
HIDDEN_DROPOUT_PROB = 0.3  # dropout on what a linear head reads (--hidden_dropout_prob)
HEADS = ("cls", "mean", "verbalizer")
POOL_OF_HEAD = {"cls": "last", "mean": "mean"}  # HeadClassifier's pooling of each linear head


def label_phrase(names: Sequence[str]) -> str:
    """'a or b' for two names, 'a, b, c, d, or e' for more (the course's wording)."""
    if len(names) == 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + ", or " + names[-1]


def course_prompt(names: Sequence[str]) -> str:
    return COURSE_PROMPT.format(names=label_phrase(names))


def check_reading(head: str, hidden_dropout_prob: float, max_sentence_len: Optional[int]):
    """How a classification run reads its sentences and answers."""
    if head not in HEADS:
        raise MinillamaError(f"--prefix_head must be one of {', '.join(HEADS)}, got {head!r}")
    if not 0.0 <= hidden_dropout_prob < 1.0:
        raise MinillamaError(f"--hidden_dropout_prob must be in [0, 1), got {hidden_dropout_prob}")
    if max_sentence_len is not None and max_sentence_len <= 0:
        raise MinillamaError(f"--max_sentence_len must be a positive integer, got {max_sentence_len}")


def placeholder_note(test_path: str, labels: torch.Tensor) -> Optional[str]:
    """CFIMDB's public test labels are placeholders (all the same value)."""
    if os.path.basename(test_path).startswith("cfimdb") or bool((labels == labels[0]).all()):
        return (f"note: the test labels of {test_path} are placeholders (all {int(labels[0])}), "
                "so test acc is meaningless; report dev acc")
    return None


def note_cut_sentences(splits, tokenizer, max_len: int, asked: Optional[int]):
    """One line per split whose sentences were cut to the context (not when the user asked)."""
    for split in splits.values():
        lengths = [len(tokenizer.encode(s, bos=False)) for s in split.sentences]
        cut = sum(n > max_len for n in lengths)
        if cut and (asked is None or max_len < asked):
            print(f"note: {cut} of {len(lengths)} sentences in {split.path} are longer than the {max_len} tokens "
                  f"that fit the model's context and were cut (longest {max(lengths)} tokens)")


# -- the rows of several named sets of files, in one pass ----------------------------------------
def per_name(value: Optional[str], names: List[str], flag: str, each: str = "adapter") -> List[str]:
    """A comma list with one entry per adapter (`each`: per task, tasks/multitask.py)."""
    items = [v.strip() for v in (value or "").split(",")]
    if len(items) != len(names) or not all(items):
        raise MinillamaError(f"{flag}: give one file per {each} ({len(names)}, for {','.join(names)}), "
                             f"comma-separated; got {value!r}")
    return items


def mixed_run_paths(names: List[str], inputs: Dict[str, List[str]], outs: Dict[str, List[str]],
                    adapters: List[str]) -> Dict[str, str]:
    """{flag (adapter): path} of a mixed run for check_distinct_paths: every output, and each
    input file once (two adapters may read one dev set; nothing may write over it)."""
    paths, read = {}, set()
    for split, files in inputs.items():
        for name, path in zip(names, files):
            if os.path.realpath(path) not in read:
                read.add(os.path.realpath(path))
                paths[f"--{split} ({name})"] = path
    for name, adapter in zip(names, adapters):
        for suffix in (".json", ".safetensors"):
            paths[f"--load_adapter ({name}, {suffix})"] = adapter + suffix
    for split, files in outs.items():
        paths.update({f"--{split}_out ({name})": path for name, path in zip(names, files)})
    return paths


def row_splits(reader: RowReader, tokenizer, room: int, labels: Dict[str, List[str]], files: Dict[str, List[str]],
               max_sentence_len: Optional[int]) -> Dict[Tuple[str, str], Split]:
    """{(name, split): Split} for the rows of a mixed batch: name's files[split] (one per name, in
    `labels`' order), read as `reader` reads that name (the course prompt before label names),
    sentences cut to what fits `room`, the context beside the longest prefix (a note says so)."""
    splits = {}
    for i, name in enumerate(labels):
        suffix = None if name in reader.heads else course_prompt(labels[name])
        extra = 1 + (len(tokenizer.encode(suffix, bos=False)) if suffix else 0) + reader.extra_positions(name)
        max_len = room - extra if max_sentence_len is None else min(max_sentence_len, room - extra)
        if max_len <= 0:
            raise MinillamaError(f"the model's context ({room} tokens beside the prefixes) is too short for the prompt")
        for split in files:
            splits[name, split] = load_split(files[split][i], tokenizer, len(labels[name]), max_len, suffix)
        note_cut_sentences({split: splits[name, split] for split in files}, tokenizer, max_len, max_sentence_len)
    return splits


def write_row_results(names: List[str], files: Dict[str, List[str]], outs: Dict[str, List[str]],
                      splits: Dict[Tuple[str, str], Split], preds: Dict[Tuple[str, str], torch.Tensor]
                      ) -> Dict[str, Dict[str, float]]:
    """Each name's predictions on each of its files (outs[split][i]) and its `name: dev acc :: `
    lines (CFIMDB's placeholder test labels noted).  Returns {name: {split: accuracy}}."""
    results = {}
    for i, name in enumerate(names):
        results[name] = {}
        for split in files:
            key = (name, split)
            write_predictions(outs[split][i], preds[key].tolist(), splits[key].sentences)
            results[name][split] = accuracy(preds[key], splits[key].labels)
            print(f"{name}: {split} acc :: {results[name][split]:.3f}")
            print(f"{name}: wrote {split} predictions to {outs[split][i]}")
            note = placeholder_note(files[split][i], splits[key].labels) if split == "test" else None
            if note:
                print(f"{name}: {note}")
    return results


def reader_kind(reader: RowReader, name: str) -> str:
    """How one adapter of a mixed run reads its answer, in the words of --prefix_head."""
    if name not in reader.heads:
        return "label names (verbalizer)"
    return "mean head" if name in reader.mean_heads else "cls head"
