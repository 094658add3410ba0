"""Tokenizers: the glue between text and ids.

`load_tokenizer(path)` detects the family from the file's content:
- a sentencepiece model protobuf (Llama 2 `tokenizer.model`, llama2.c `tok512.model`)
  -> SentencePieceTokenizer
- a tiktoken rank file (lines of `base64 rank`, Llama 3 `tokenizer.model`)
  -> Llama3Tokenizer (see llama3_tokenizer.py)
A directory is searched for `tokenizer.model`, then `original/tokenizer.model`.

Every tokenizer has: encode(text, bos=True, eos=False) -> list[int],
decode(ids) -> str, vocab_size, bos_id, eos_id, pad_id (the id used to pad
batches; attention masks make its value irrelevant), stop_ids (ids that end
generation) and family ("llama2" or "llama3").
"""
from __future__ import annotations

import os
from typing import List, Sequence

from .errors import MinillamaError
from .files import not_found

TOKENIZER_HINT = "./setup.sh puts the Llama 2 tokenizer.model into the repository root; or pass --tokenizer PATH"


class SentencePieceTokenizer:
    family = "llama2"

    def __init__(self, path: str):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=path)
        except Exception as e:  # sentencepiece raises bare RuntimeError/OSError
            raise MinillamaError(f"{path}: not a readable sentencepiece model ({str(e).splitlines()[0]})") from None
        self.path = path
        self.vocab_size = self.sp.vocab_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        # Llama 2 defines no pad token (pad_id() == -1); pad with eos and rely on masks.
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
        self.stop_ids = [self.eos_id]

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        ids = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


def _looks_like_tiktoken(path: str) -> bool:
    """tiktoken rank files start with a line `<base64> <int>`."""
    with open(path, "rb") as f:
        first = f.readline(256).split()
    return len(first) == 2 and first[1].isdigit()


def resolve_tokenizer_path(path: str) -> str:
    if os.path.isdir(path):
        for candidate in ("tokenizer.model", os.path.join("original", "tokenizer.model")):
            if os.path.isfile(os.path.join(path, candidate)):
                return os.path.join(path, candidate)
        raise MinillamaError(f"{path}: no tokenizer.model or original/tokenizer.model in this directory")
    if not os.path.isfile(path):
        raise not_found("tokenizer", path, TOKENIZER_HINT)
    return path


def load_tokenizer(path: str):
    """A SentencePieceTokenizer or Llama3Tokenizer, chosen from the file's content."""
    path = resolve_tokenizer_path(path)
    if _looks_like_tiktoken(path):
        from .llama3_tokenizer import Llama3Tokenizer
        return Llama3Tokenizer(path)
    return SentencePieceTokenizer(path)
