"""Conditional language-model data: source -> target pairs as one token sequence.

Layout (Li & Liang's for table-to-text):  [bos] SOURCE [bos] TARGET [eos]
SOURCE and TARGET are the tokenizer's tokens without their own bos/eos.  The model
reads the whole sequence; the loss reads only the predictions of TARGET's tokens and
the final eos: `labels[t]` is the token at t + 1 where that token belongs to TARGET or
is the eos, and train.IGNORE elsewhere (the source, the separator, padding).  Decoding
starts from the prompt `[bos] SOURCE [bos]`.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import torch

from .data import Batch, pad_batch
from .train import IGNORE


def prompt_ids(tokenizer, source: str) -> List[int]:
    """[bos] SOURCE [bos]: what decoding starts from."""
    return [tokenizer.bos_id] + tokenizer.encode(source, bos=False, eos=False) + [tokenizer.bos_id]


def pair_ids(tokenizer, source: str, target: str) -> List[int]:
    """[bos] SOURCE [bos] TARGET [eos]."""
    return prompt_ids(tokenizer, source) + tokenizer.encode(target, bos=False, eos=False) + [tokenizer.eos_id]


def next_token_labels(ids: Sequence[int], prompt_len: int) -> List[int]:
    """labels[t] = ids[t + 1] for the target tokens and eos (t + 1 >= prompt_len), else IGNORE."""
    return [ids[t + 1] if t + 1 >= prompt_len else IGNORE for t in range(len(ids) - 1)] + [IGNORE]


class LMSplit:
    """Tokenised (source, target) pairs, batched with right padding and next-token labels."""

    def __init__(self, sequences: List[List[int]], prompt_lengths: List[int], pad_id: int, path: str = ""):
        self.sequences, self.prompt_lengths, self.pad_id, self.path = sequences, prompt_lengths, pad_id, path

    @classmethod
    def from_pairs(cls, tokenizer, pairs: Sequence, path: str = "") -> "LMSplit":
        seqs = [pair_ids(tokenizer, p.source, p.target) for p in pairs]
        lens = [len(prompt_ids(tokenizer, p.source)) for p in pairs]
        return cls(seqs, lens, tokenizer.pad_id, path)

    def __len__(self) -> int:
        return len(self.sequences)

    def longest(self) -> int:
        return max(len(s) for s in self.sequences)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            rows = [self.sequences[i] for i in idx.tolist()]
            ids, mask = pad_batch(rows, self.pad_id)
            labels = torch.full_like(ids, IGNORE)
            for r, i in enumerate(idx.tolist()):
                row = next_token_labels(self.sequences[i], self.prompt_lengths[i])
                labels[r, :len(row)] = torch.tensor(row)
            yield Batch(ids, mask, labels, idx)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size
