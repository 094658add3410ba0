"""Coursework classification data: reading, tokenising, batching.

File formats (the course's, see ../shared/docs/reference-facts.md):
- data files: one example per line, `LABEL ||| SENTENCE`, LABEL an integer in
  [0, number of label names);
- label-name files: a JSON list of label names in label order,
  e.g. `["bad", "good"]`.

Batches are right-padded with the tokenizer's pad id; the attention mask (1 for
real tokens, 0 for padding) makes the pad value irrelevant to the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch

from .errors import MinillamaError
from .files import atomic_write_text, not_found, resolve_repo_path

SEPARATOR = " ||| "


@dataclass
class Example:
    label: int
    sentence: str  # stripped, as the course writes it back into prediction files
    line: int      # 1-based line number in its file, for error messages


@dataclass
class Batch:
    input_ids: torch.Tensor       # [B, T] long, right-padded
    attention_mask: torch.Tensor  # [B, T] long, 1 = real token
    labels: torch.Tensor          # [B] long
    indices: torch.Tensor         # [B] long, positions of the examples in their split

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.indices)


# -- reading ------------------------------------------------------------------------
def _read_text(path: str, what: str) -> str:
    """The file's text; a relative path missing here is also looked for under the
    repository root (files.resolve_repo_path), where setup.sh puts data/."""
    found = resolve_repo_path(path)
    if not os.path.isfile(found):
        raise not_found(f"{what} file", path, "run ./setup.sh to fetch the course data, or pass the right path",
                        repo_too=True)
    path = found
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise MinillamaError(f"{path}: cannot read {what} file ({e})") from None


def read_label_names(path: str) -> List[str]:
    """The JSON list of label names, e.g. ["bad", "good"]."""
    text = _read_text(path, "label-name")
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise MinillamaError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected a list of "
                             f'label names such as ["bad", "good"]') from None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n.strip() for n in names):
        raise MinillamaError(f'{path}: expected a JSON list of at least two non-empty label names such as '
                             f'["bad", "good"], got {text.strip()[:60]!r}')
    return names


def read_examples(path: str, num_labels: Optional[int] = None) -> List[Example]:
    """Parse `LABEL ||| SENTENCE` lines; labels must lie in [0, num_labels).
    Blank lines at the end of the file are ignored; anywhere else they are errors."""
    lines = _read_text(path, "data").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    examples = []
    for number, line in enumerate(lines, start=1):
        label_text, sep, sentence = line.partition(SEPARATOR)
        if not sep:
            raise MinillamaError(f"{path}:{number}: malformed line, expected 'LABEL ||| SENTENCE', "
                                 f"got {line[:60]!r}")
        try:
            label = int(label_text.strip())
        except ValueError:
            raise MinillamaError(f"{path}:{number}: label {label_text.strip()[:20]!r} is not an integer "
                                 f"(expected 'LABEL ||| SENTENCE')") from None
        if num_labels is not None and not 0 <= label < num_labels:
            raise MinillamaError(f"{path}:{number}: label {label} is outside the {num_labels} label names "
                                 f"(0..{num_labels - 1}): does --label-names belong to this data set?")
        examples.append(Example(label, sentence.strip(), number))
    if not examples:
        raise MinillamaError(f"{path}: empty split, no 'LABEL ||| SENTENCE' lines")
    return examples


# -- tokenising --------------------------------------------------------------------------
def encode_examples(examples: Sequence[Example], tokenizer, max_len: Optional[int] = None,
                    suffix: Optional[str] = None, prefix: str = "") -> List[List[int]]:
    """Token ids per example: [bos] + prefix + sentence (cut to max_len tokens, as the
    course's tokenizer does) + suffix tokens (prefix and suffix never cut, so in-context
    examples and the prompt stay whole).

    The suffix is joined to the sentence as text (`f"{prefix}{sentence} {suffix}"`, the
    course's prompt construction) when nothing needs cutting, so the tokens are
    exactly the course's; when the sentence is cut, the three parts' tokens are
    concatenated."""
    out = []
    for ex in examples:
        sentence_ids = tokenizer.encode(ex.sentence, bos=False)
        if max_len is not None and len(sentence_ids) > max_len:
            ids = ((tokenizer.encode(prefix, bos=False) if prefix else []) + sentence_ids[:max_len]
                   + (tokenizer.encode(suffix, bos=False) if suffix else []))
        else:
            text = prefix + (ex.sentence if suffix is None else f"{ex.sentence} {suffix}")
            ids = tokenizer.encode(text, bos=False)
        out.append([tokenizer.bos_id] + ids)
    return out


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int):
    """Right-pad to the longest: (ids [B, T], mask [B, T]), both long."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def left_pad(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Right-padded rows -> left-padded rows (same width): every row then ends
    at column T-1, so appended tokens line up across the batch."""
    T = input_ids.shape[1]
    lengths = attention_mask.long().sum(dim=1, keepdim=True)                 # [B, 1]
    src = (torch.arange(T, device=input_ids.device)[None] + lengths) % T     # new[j] = old[(j + n) % T]
    return input_ids.gather(1, src), attention_mask.gather(1, src)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int):
    """Left-pad to the longest: (ids [B, T], mask [B, T]); every row ends at column T-1."""
    return left_pad(*pad_batch(sequences, pad_id))


class Split:
    """One tokenised split: ids, labels and sentences, batched on demand."""

    def __init__(self, examples: Sequence[Example], token_ids: List[List[int]], pad_id: int, path: str = ""):
        self.examples = list(examples)
        self.token_ids = token_ids
        self.labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        self.pad_id = pad_id
        self.path = path

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def sentences(self) -> List[str]:
        return [ex.sentence for ex in self.examples]

    def order(self, shuffle: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The examples' indices [N] in the order batches take them: file order, or random."""
        return torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
        """Batches in file order, or in a random order drawn from generator (`order`)."""
        order = self.order(shuffle, generator)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([self.token_ids[i] for i in idx.tolist()], self.pad_id)
            yield Batch(ids, mask, self.labels[idx], idx)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def load_split(path: str, tokenizer, num_labels: int, max_len: Optional[int] = None,
               suffix: Optional[str] = None, prefix: str = "") -> Split:
    examples = read_examples(path, num_labels)
    return Split(examples, encode_examples(examples, tokenizer, max_len, suffix, prefix), tokenizer.pad_id, path)


# -- writing -------------------------------------------------------------------------------
def write_predictions(path: str, predictions: Sequence[int], sentences: Sequence[str]):
    """`PRED ||| SENTENCE` lines in input order, written to a temporary file then renamed."""
    atomic_write_text(path, "".join(f"{int(pred)}{SEPARATOR}{sentence}\n"
                                    for pred, sentence in zip(predictions, sentences)))
