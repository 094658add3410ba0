"""Choosing the next token, and the decoding loop.

temperature 0      -> greedy (argmax)
temperature t > 0  -> sample from softmax(logits / t)
epsilon e          -> drop tokens whose probability is below e, renormalise,
                      then sample (the most likely token is always kept).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import MinillamaError
from .beam import beam_search
from .decoding import as_id_set, fit_new_tokens


def check_sampling_args(temperature: float, epsilon: Optional[float]):
    if temperature is None or not 0.0 <= temperature < math.inf:
        raise MinillamaError(f"temperature must be >= 0 and finite, got {temperature}")
    if epsilon is not None and not (0.0 <= epsilon < 1.0):
        raise MinillamaError(f"--epsilon must be in [0, 1), got {epsilon}")


def sample_next_token(logits: torch.Tensor, temperature: float = 0.0, epsilon: Optional[float] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits: [B, vocab] -> next token ids [B]."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if epsilon:
        keep = probs >= epsilon
        keep.scatter_(-1, probs.argmax(dim=-1, keepdim=True), True)  # never drop every token
        probs = probs * keep
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.inference_mode()  # no autograd bookkeeping at all: cheaper per op than no_grad on the decode path
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             epsilon: Optional[float] = None, eos_id=None, attention_mask: Optional[torch.Tensor] = None,
             generator: Optional[torch.Generator] = None, use_cache: bool = True, beam_size: int = 1,
             length_penalty: float = 1.0) -> torch.Tensor:
    """Decode up to max_new_tokens after input_ids [B, T]; returns [B, T + n].

    Ragged prompts are left-padded with attention_mask [B, T] (0 = pad).  With
    the KV cache each step feeds one token; without it (use_cache=False, for
    comparison) each step re-reads the whole sequence.  A row that has produced
    an id in eos_id (int or ids) keeps emitting that id; the loop stops when
    every row has finished, after max_new_tokens, or at the model's max_seq_len.

    beam_size k > 1: beam search instead (beam.py: the best of k beams per row,
    scored with length_penalty); it is deterministic and always uses the cache."""
    if beam_size != 1:
        if temperature or epsilon or not use_cache:
            raise MinillamaError(f"beam search (beam size {beam_size}) is deterministic and uses the KV cache: "
                                 f"drop temperature/epsilon/use_cache=False, or use beam size 1")
        return beam_search(model, input_ids, max_new_tokens, beam_size, length_penalty, eos_id, attention_mask)
    check_sampling_args(temperature, epsilon)
    B, T = input_ids.shape
    max_new_tokens = fit_new_tokens(model, T, max_new_tokens)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    stop_ids = as_id_set(eos_id, input_ids.device)
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    ids, mask = input_ids, attention_mask
    cache = model.new_cache(B, T + max_new_tokens) if use_cache else None
    step_ids, step_mask = ids, mask
    for _ in range(max_new_tokens):
        logits, _ = model(step_ids, step_mask, cache=cache, last_only=True)
        next_id = sample_next_token(logits[:, -1], temperature, epsilon, generator)
        if stop_ids is not None:
            next_id = torch.where(finished, stop_ids[0], next_id)
            finished |= torch.isin(next_id, stop_ids)
        ids = torch.cat([ids, next_id[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_id[:, None])], dim=1)
        step_ids, step_mask = (next_id[:, None], mask[:, -1:]) if use_cache else (ids, mask)
        if stop_ids is not None and bool(finished.all()):
            break
    return ids
