"""Beam search: follow the k most likely continuations of a prompt, not just the best token.

A beam's score is the sum of its tokens' log-probabilities.  Every step, each of a prompt's
k beams proposes its V next tokens, scored beam score + log p(token), and the best 2k of the
k * V become candidates: up to k may end here (eos), and k must remain to continue.
  * a candidate that ends (eos, or the last allowed token) and ranks among the best k becomes
    a finished hypothesis, scored  score / generated_length ** length_penalty  (the length
    counts the eos; length_penalty > 0 favours longer hypotheses, 0 compares raw sums,
    < 0 favours shorter ones);
  * the best k candidates that do not end are the next step's beams.
A prompt is done once it holds k finished hypotheses; its answer is the best of them.  These
are the rules of transformers' generate(num_beams=k, length_penalty=lp, early_stopping=True,
do_sample=False), so on the same weights both produce the same tokens (tests/test_beam.py).

The k beams of every prompt run as one batch through the KV cache: prompt b's beams are rows
b*k .. b*k + k-1.  After each step `KVCache.reorder` gives every new beam the history of the
beam it extends; a prompt that is done leaves the batch.  Shapes: B prompts (L of them still
searching), k beams, V vocabulary, T prompt tokens, N new tokens at most.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ..errors import MinillamaError
from .decoding import as_id_set, fit_new_tokens

NO_BEAM = -1e9  # the score of beams 1..k-1 before the first step: a prompt starts as one beam


def check_beam_args(beam_size: int, length_penalty: float):
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise MinillamaError(f"beam size must be a positive integer, got {beam_size!r}")
    if not math.isfinite(length_penalty):
        raise MinillamaError(f"length penalty must be a finite number, got {length_penalty}")


def _take(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tensor [L, n, ...] -> [L, m, ...]: entries index [L, m] along dim 1, per row."""
    index = index.view(index.shape + (1,) * (tensor.dim() - 2)).expand(index.shape + tensor.shape[2:])
    return tensor.gather(1, index)


class Hypotheses:
    """The best k finished hypotheses of each of B prompts, best first.

    scores [B, k] (-inf: an empty slot), tokens [B, k, N] (the generated tokens, then
    `fill`), lengths [B, k] (generated tokens, eos included), count [B] (ever offered)."""

    def __init__(self, batch: int, k: int, max_new: int, fill: int, device):
        self.fill = fill
        self.scores = torch.full((batch, k), -math.inf, device=device)
        self.tokens = torch.full((batch, k, max_new), fill, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)

    def add(self, rows: torch.Tensor, scores: torch.Tensor, tokens: torch.Tensor):
        """Offer prompts `rows` [L] hypotheses: scores [L, k] (-inf: none in that slot),
        tokens [L, k, n] (n generated so far); keep the best k of old and new."""
        L, k, n = tokens.shape
        padded = tokens.new_full((L, k, self.tokens.shape[2]), self.fill)
        padded[:, :, :n] = tokens
        merged = torch.cat([self.scores[rows], scores], dim=1)  # [L, 2k], old slots first
        best = merged.topk(k, dim=1).indices  # [L, k], best first
        self.scores[rows] = merged.gather(1, best)
        self.tokens[rows] = _take(torch.cat([self.tokens[rows], padded], dim=1), best)
        self.lengths[rows] = torch.cat([self.lengths[rows], torch.full_like(best, n)], dim=1).gather(1, best)
        self.count[rows] += (scores > -math.inf).sum(dim=1)

    def best(self, prompt: torch.Tensor) -> torch.Tensor:
        """prompt [B, T] + each row's best hypothesis: [B, T + the longest best's length]."""
        return torch.cat([prompt, self.tokens[:, 0, : int(self.lengths[:, 0].max())]], dim=1)


@torch.inference_mode()
def beam_search(model, input_ids: torch.Tensor, max_new_tokens: int, beam_size: int = 5,
                length_penalty: float = 1.0, eos_id=None, attention_mask: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
    """The best of beam_size beams after each prompt of input_ids [B, T] (left-padded
    if ragged, with attention_mask [B, T]): [B, T + n], n <= max_new_tokens.  model: any
    backbone (new_cache, forward(ids, mask, cache=, last_only=), input_room).

    A hypothesis ends at an id in eos_id (int or ids; None: only at max_new_tokens or
    the model's context); shorter ones are filled with the first eos id after it, as
    transformers fills them (with its pad id, which defaults to the eos id)."""
    check_beam_args(beam_size, length_penalty)
    B, T = input_ids.shape
    k, device = beam_size, input_ids.device
    N = fit_new_tokens(model, T, max_new_tokens)
    if N == 0:
        return input_ids.clone()
    stop_ids = as_id_set(eos_id, device)
    n_stop = len(stop_ids) if stop_ids is not None else 0
    n_candidates = max(2, 1 + n_stop) * k  # however many end (<= n_stop per beam), k remain to go on
    done = Hypotheses(B, k, N, int(stop_ids[0]) if stop_ids is not None else 0, device)

    # Read each prompt once, then copy its cache row to its k beams.
    cache = model.new_cache(B, T + N)
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    logits, _ = model(input_ids, mask, cache=cache, last_only=True)  # [B, 1, V]
    cache.reorder(torch.arange(B, device=device).repeat_interleave(k))
    V = logits.shape[-1]
    log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)[:, None].expand(B, k, V)
    scores = torch.full((B, k), NO_BEAM, device=device)  # [L, k]: beams 1..k-1 start empty, so the
    scores[:, 0] = 0.0                                   # first step's candidates all extend beam 0
    beams = torch.zeros(B, k, 0, dtype=torch.long, device=device)  # [L, k, step]: their tokens
    rows = torch.arange(B, device=device)  # [L]: the prompts still searching

    for step in range(N):
        # Candidates: the best n_candidates of the k * V continuations, best first.
        totals = (log_probs + scores[:, :, None]).view(len(rows), k * V)
        cand_scores, flat = totals.topk(n_candidates, dim=1)  # [L, 2k]
        parent, token = flat // V, flat % V  # which beam each extends, with which token
        last = step == N - 1
        ends = torch.ones_like(token, dtype=torch.bool) if last else (
            torch.isin(token, stop_ids) if stop_ids is not None else torch.zeros_like(token, dtype=torch.bool))

        # Ended candidates among the best k are finished hypotheses.
        if bool(ends[:, :k].any()):
            tokens = torch.cat([_take(beams, parent[:, :k]), token[:, :k, None]], dim=2)  # [L, k, step + 1]
            penalised = cand_scores[:, :k] / ((step + 1) ** length_penalty)
            done.add(rows, penalised.masked_fill(~ends[:, :k], -math.inf), tokens)
        if last:
            break

        # The best k candidates that go on are the next beams.
        keep = cand_scores.masked_fill(ends, -math.inf).topk(k, dim=1).indices  # [L, k]
        keep = keep.gather(1, cache.beam_rows(parent.gather(1, keep)))  # which cache row each beam takes
        scores, parent, token = cand_scores.gather(1, keep), parent.gather(1, keep), token.gather(1, keep)
        beams = torch.cat([_take(beams, parent), token[:, :, None]], dim=2)

        # Prompts with k finished hypotheses are done (early_stopping=True): they leave the batch.
        searching = done.count[rows] < k
        if not bool(searching.all()):
            if not bool(searching.any()):
                break
            rows, scores, parent, token, beams = (t[searching] for t in (rows, scores, parent, token, beams))
        origin = torch.arange(len(searching), device=device)[searching] * k  # each prompt's first row in the cache
        cache.reorder((origin[:, None] + parent).view(-1))

        logits, _ = model(token.view(-1, 1), torch.ones_like(token.view(-1, 1)), cache=cache, last_only=True)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1).view(len(rows), k, V)
    return done.best(input_ids)
