"""Greedy and batched beam search over any model that offers the seam `nmt.models.step.Seq2Seq`.

One implementation serves every architecture and backend: greedy search is beam search with a
beam of one. The search only needs the seam (typed in `nmt.models.step`):

    encode(src (B, S), src_lengths (B,)) -> (memory, state)
    decode_top_k(prev_tokens (R,), memory, state, k) -> (best (R, k), tokens (R, k), eos (R,), state)
    decode_step(prev_tokens (R,), memory, state) -> (log_probs (R, V), state), when n-grams are blocked
    select_memory / select_state(tensors, rows), and the memory layout `memory_per_sentence`
    decode_top_k_with_attention / decode_step_with_attention: the same and the step's attention
      (R, S) last, only when the hypotheses' attention is asked for (`attends` models)

`memory` (encoder outputs, masks, cross-attention keys) is the same for every hypothesis of a
sentence, so it is only re-selected when finished sentences leave the batch (and expanded to the
beams once, unless the model takes it once per sentence); `state` (recurrent states, key/value
caches) follows its hypothesis and is re-selected every step.

`BeamBatch` holds the bookkeeping of a batch of beams and is driven by one loop in
`beam_search`; it is tested on hand-made log-probabilities.

Conventions: a finished hypothesis stays finished: its only continuation is EOS at no cost, so
its score and length no longer change. Candidates are ranked by their length-normalised score
(GNMT: log p / ((5 + |y|) / 6) ** alpha, |y| counting the EOS), which for unfinished
hypotheses of one step is the same order as their log-probability. A sentence is done when all
of its beams have finished, or earlier, as soon as its n best finished hypotheses can no longer
be overtaken (`BeamBatch._decided`: the same result, fewer steps); the search stops when every
sentence is done. The first step runs once per sentence, its result repeated for the beams.

Letters: B sentences, K beams, R = B * K rows, V vocabulary, t tokens so far.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from nmt.config import SearchConfig
from nmt.specials import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:  # the models import this module's rules; the search needs their seam's type only
    from nmt.models.step import Seq2Seq

# the tokens no search ever produces, whatever the model gives them: the one statement of this
# rule, which the ONNX output head (built with it) and every backend's top k follow
BANNED_IDS: tuple[int, ...] = (PAD_ID, BOS_ID)


def outside_sample(vocabulary: Tensor, vocab_size: int, size: int) -> tuple[Tensor, float]:
    """Ids outside a shortlist's `vocabulary` (V',) whose logits estimate the rest's share of the
    softmax normaliser, and the log of the weight each stands for: (M,) int64, log(n / M).

    A shortlist computes the logits of its V' ids only; normalising over them alone raises every
    log-probability by the log of the mass outside (7% on average at the steps of the shipped
    attention LSTM's translations of val), by a different amount for each hypothesis, which moves
    the search's choices. So the normaliser also sums the logits of M of the n ids outside, each
    counted n / M times: evenly spaced over them in id order (SentencePiece ranks its pieces by
    frequency: a sample of every frequency band; the same for every engine, no randomness). With
    M >= n that is every one, once: the full vocabulary's normaliser. M = min(`size`, n); empty
    (normalised over the vocabulary alone) when that is 0."""
    if size <= 0:  # no sample: nothing to find (the default of a shortlist, at every batch)
        return vocabulary.new_zeros(0, dtype=torch.long), 0.0
    inside = torch.zeros(vocab_size, dtype=torch.bool)
    inside[vocabulary.cpu()] = True
    outside = (~inside).nonzero().squeeze(1)  # (n,) ascending
    count = min(size, outside.numel())
    if count == 0:
        return outside[:0], 0.0
    picks = torch.linspace(0, outside.numel() - 1, count, dtype=torch.float64).round().long()
    return outside[picks].to(vocabulary.device), math.log(outside.numel() / count)


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # length-normalised log-probability, the ranking key
    log_prob: float  # total log-probability, EOS included
    # when asked for: each step's attention over the batch's source positions, the tokens' and
    # the final EOS's (len(tokens) + 1, S)
    attention: Tensor | None = None


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha; 1 when alpha is 0."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def max_lengths(src_lengths: Tensor, options: SearchConfig, cap: int | None = None) -> Tensor:
    """Longest target (EOS included) for each sentence: a * source length + b, at most `cap` and
    at most the options' `max_length` (+1 for EOS)."""
    limits = (src_lengths.float() * options.max_len_a).floor().long() + options.max_len_b
    caps = [c for c in (cap, options.max_length and options.max_length + 1) if c]
    return limits.clamp(max=min(caps)) if caps else limits


def select(tensors: Mapping[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Pick rows (dim 0) of every tensor: reorders beams or drops finished sentences."""
    return {name: value.index_select(0, index) for name, value in tensors.items()}


def _blocked_ngrams(tokens: Tensor, n: int, vocab_size: int) -> Tensor:
    """(R, V) bool: tokens that would repeat an n-gram already present in each row of (R, t)."""
    rows, length = tokens.shape
    if n < 1 or length < n:
        return torch.zeros(rows, vocab_size, dtype=torch.bool, device=tokens.device)
    if n == 1:
        banned = torch.zeros(rows, vocab_size, device=tokens.device)
        return banned.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=banned.dtype)) > 0
    windows = tokens.unfold(1, n, 1)  # (R, t-n+1, n)
    prefix = tokens[:, length - n + 1 :]  # (R, n-1): the last n-1 tokens
    matches = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # (R, t-n+1)
    banned = torch.zeros(rows, vocab_size, device=tokens.device)
    return banned.scatter_add_(1, windows[:, :, -1], matches.to(banned.dtype)) > 0


class BeamBatch:
    """The beams of a batch of sentences while they are searched.

    Rows are flattened sentence-major: row b * K + k is beam k of the b-th still-active sentence.
    `advance` consumes one step of log-probabilities and says which rows the model's state
    must be taken from; `results` holds the n-best lists in the original sentence order.
    With `attention`, each step also takes the rows' attention over the source (R, S), which
    follows its hypothesis like its tokens do, and the hypotheses carry it.

    The bookkeeping is numpy arrays on the host, whatever device the model runs on: its arrays
    are a few hundred numbers, where a NumPy operation costs a fraction of a torch one (the
    search runs between an engine's steps, with the CPU's caches cold, at every step). The
    engines' outputs come in as tensors (`advance`, `advance_top_k`, read once per step) and the
    rows to select go out as tensors on the engine's device.
    """

    def __init__(
        self,
        max_lens: Tensor,
        options: SearchConfig,
        attention: bool = False,
        drop_at_once: bool = False,
        skip_finished: bool = False,
    ):
        batch, beam = max_lens.numel(), options.beam_size
        self.device = max_lens.device
        self.options = options
        self.beam_size = beam
        self.max_lens = max_lens.cpu().numpy().astype(np.int64)  # (B,) of the active sentences
        # the length penalty of every length a hypothesis can reach (the search's rows are small:
        # a table lookup is one operation where the formula is four, at every step)
        lengths = torch.arange(int(self.max_lens.max()) + 2 if batch else 2)
        self.penalties = length_penalty(lengths, options.length_penalty).numpy()  # (max length + 2,)
        self._limits()
        self.sentence_ids = np.arange(batch)  # (B,) original positions
        self.tokens = np.empty((batch * beam, 0), np.int64)  # (R, t)
        # (R,) the last column of `tokens`, kept apart as the next step's input (a column of
        # `tokens` is strided: an engine would copy it)
        self.last_tokens = np.full(batch * beam, BOS_ID, np.int64)
        # (R, t, S) when tracked, on the engine's device; its S is known at the first step
        self.attention: Tensor | None = None
        self.track_attention = attention
        self.drop_at_once = drop_at_once  # see `_retire`
        # the state rows of finished hypotheses given as -1: an engine that skips them
        # (`Seq2Seq.skips_finished`) need not compute them, as no finished hypothesis is extended
        self.skip_finished = skip_finished
        scores = np.full((batch, beam), -np.inf, np.float32)
        scores[:, 0] = 0.0  # all beams start equal: keep one so the first step has no duplicates
        self.scores = scores  # (B, K) total log-prob
        self.lengths = np.zeros((batch, beam), np.int64)  # EOS included
        self.finished = np.zeros((batch, beam), bool)
        self.normalised = scores.copy()  # (B, K) the length-normalised scores
        self.results: list[list[Hypothesis]] = [[] for _ in range(batch)]

    def _limits(self) -> None:
        """What follows from the active sentences' length limits: each row's, each sentence's
        largest length penalty."""
        self.row_max_lens = self.max_lens.repeat(self.beam_size)  # (R,)
        self.longest = self.penalties[self.max_lens]  # (B,)

    @property
    def done(self) -> bool:
        return self.sentence_ids.size == 0

    def next_tokens(self, every: int = 1) -> Tensor:
        """(R / every,) the rows' last tokens, every `every`-th row, as the engine's input."""
        return torch.from_numpy(self.last_tokens[::every] if every > 1 else self.last_tokens).to(self.device)

    def advance(self, log_probs: Tensor, attention: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Take one step. log_probs: (R, V) for the current rows; it may be modified in place;
        attention (R, S): the step's attention, when the batch tracks it.

        Returns (state_index, memory_index): rows to `select` from the state for the next step,
        and, when finished sentences left the batch, the rows to `select` from the memory
        (None when every sentence is still active), on the engine's device.

        Every candidate of a row shares the row's score and length, so the sentence's best K
        are among the K best of each row: ranking K * K candidates instead of K * V is the same
        search at a fraction of the cost.
        """
        log_probs = self._mask(log_probs.float(), self.tokens.shape[1])
        row_best, row_tokens = log_probs.topk(min(self.beam_size, log_probs.size(1)), dim=1)  # (R, K')
        return self._extend(row_best.numpy(force=True), row_tokens.numpy(force=True), attention)

    def advance_top_k(
        self, row_best: Tensor, row_tokens: Tensor, eos: Tensor, attention: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """`advance` from what an engine that ranks each row's continuations itself computes:
        row_best, row_tokens (R, K') each row's K' best log-probabilities other than PAD and BOS,
        best first, and eos (R,) each row's EOS log-probability. The same step as `advance` on the
        full log-probabilities (without n-gram blocking, which needs them all): rows that may only
        end (finished, or at their length limit) keep one candidate, EOS."""
        # force: on the host (a copy from a GPU, none on the CPU)
        best, tokens = row_best.numpy(force=True).astype(np.float32, copy=False), row_tokens.numpy(force=True)
        finished = self.finished.reshape(-1)  # (R,)
        only_eos = finished | (self.row_max_lens <= self.tokens.shape[1] + 1)  # (R,)
        if only_eos.any():  # new arrays: the engine's stay as they were
            # such a row's candidates: EOS first (at no cost once finished), then none (-inf);
            # the tokens of those others do not matter, as no hypothesis at -inf is ever returned
            eos_best = np.where(
                finished, np.float32(0.0), eos.numpy(force=True).astype(np.float32, copy=False)
            )  # (R,)
            best = np.where(only_eos[:, None], np.float32(-np.inf), best)
            best[:, 0] = np.where(only_eos, eos_best, best[:, 0])
            tokens = np.where(only_eos[:, None], EOS_ID, tokens)
        return self._extend(best, tokens, attention)

    def _extend(
        self, row_best: np.ndarray, row_tokens: np.ndarray, attention: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Keep each sentence's K best of the rows' candidates row_best, row_tokens (R, K')."""
        batch, beam = self.scores.shape
        step = self.tokens.shape[1]
        width = row_best.shape[1]
        candidates = self.scores.reshape(-1, 1) + row_best  # (R, K')
        lengths = np.where(self.finished, self.lengths, step + 1).reshape(-1, 1)  # (R, 1)
        ranked = (candidates / self.penalties[lengths]).reshape(batch, -1)  # (B, K * K')
        # the new beams: their places among each sentence's K * K' candidates, best first (ties:
        # the first), as places among all R * K' (row-major, so each comes from row place // K')
        best = np.argsort(-ranked, axis=1, kind="stable")[:, :beam]  # (B, K)
        best = (best + np.arange(0, ranked.size, ranked.shape[1])[:, None]).reshape(-1)  # (R,)
        rows = best // width  # (R,) each new beam's parent row
        self.normalised = ranked.reshape(-1)[best].reshape(batch, beam)
        self.scores = candidates.reshape(-1)[best].reshape(batch, beam)
        self.last_tokens = row_tokens.reshape(-1)[best]
        was_finished = self.finished.reshape(-1)[rows]
        self.lengths = np.where(was_finished, self.lengths.reshape(-1)[rows], step + 1).reshape(batch, beam)
        self.finished = (
            was_finished.reshape(batch, beam) | (self.last_tokens == EOS_ID).reshape(batch, beam)
        ) | ~np.isfinite(self.scores)
        self.tokens = np.concatenate([self.tokens[rows], self.last_tokens[:, None]], axis=1)
        if self.track_attention:
            if attention is None:
                raise ValueError("this beam batch tracks attention: give each step's")
            index = torch.from_numpy(rows).to(attention.device)
            step_attention = attention.float().index_select(0, index).unsqueeze(1)  # (R, 1, S)
            previous = self.attention
            self.attention = (
                step_attention
                if previous is None
                else torch.cat([previous.index_select(0, index), step_attention], 1)
            )
        return self._retire(rows)

    def _mask(self, log_probs: Tensor, step: int) -> Tensor:
        """Apply the rules of the search to (R, V) log-probs, in place: BANNED_IDS are never
        produced, n-grams may be blocked, rows at their length limit may only end (EOS), and
        finished rows only repeat EOS at no cost."""
        device = log_probs.device
        log_probs[:, BANNED_IDS] = -math.inf
        if self.options.no_repeat_ngram:
            tokens = torch.from_numpy(self.tokens).to(device)
            log_probs.masked_fill_(
                _blocked_ngrams(tokens, self.options.no_repeat_ngram, log_probs.size(1)), -math.inf
            )
        finished = torch.from_numpy(self.finished.reshape(-1)).to(device)  # (R,)
        at_limit = torch.from_numpy(self.row_max_lens <= step + 1).to(device)  # (R,)
        eos = torch.where(finished, 0.0, log_probs[:, EOS_ID])  # (R,)
        log_probs[finished | at_limit] = -math.inf  # touches only those rows
        log_probs[:, EOS_ID] = eos
        return log_probs

    def _decided(self) -> np.ndarray:
        """(B,) sentences whose n-best list can no longer change: every beam has finished, or the
        n-th best finished hypothesis already scores at least what any unfinished beam could
        still reach. That bound is exact: log-probabilities only add up to lower totals, so an
        unfinished beam's total log p stays <= its current one, and the length penalty is monotone
        in the length, so its largest value over the lengths still possible, (t + 1 .. the
        sentence's limit), is at one end. Such a beam, or any continuation of it, never outranks
        the n best finished hypotheses again, so the search would return them unchanged."""
        n = min(self.options.n_best, self.beam_size)
        finished_scores = np.where(self.finished, self.normalised, np.float32(-np.inf))  # (B, K)
        nth_finished = finished_scores.max(1) if n == 1 else np.sort(finished_scores, 1)[:, -n]  # (B,)
        shortest = self.penalties[self.tokens.shape[1] + 1]  # ()
        # the best unfinished total, then normalised: dividing by a positive number keeps the order
        # (rounding too), so this is the largest of the beams' normalised bounds
        best_reachable = np.where(self.finished, np.float32(-np.inf), self.scores).max(1) / np.maximum(
            self.longest, shortest
        )  # (B,)
        # a NaN score (a broken model's) compares false, and would keep the sentence forever
        return self.finished.all(1) | (nth_finished >= best_reachable)

    def _retire(self, rows: np.ndarray) -> tuple[Tensor, Tensor | None]:
        """Move sentences that are decided (see `_decided`) into `results`; drop their rows once
        they are at least half the batch, or at once with `drop_at_once`. Dropping copies every
        cache and state row in a PyTorch model, so doing it for each sentence as it finishes cost
        more than decoding a few finished rows along (a batch of mixed lengths decoded 1.17x
        faster, output unchanged on test_2016); an engine that gathers its state at every step
        anyway (`Seq2Seq.cheap_select`) drops them at once."""
        done = self._decided()  # (B,)
        if not done.any():
            return self._state_rows(rows), None
        decided = done.nonzero()[0]
        for b, sentence in zip(decided.tolist(), self.sentence_ids[decided].tolist(), strict=True):
            if not self.results[sentence]:  # else decided earlier, kept in the batch
                self.results[sentence] = self._nbest(b)
        if decided.size * 2 < done.size and not self.drop_at_once:
            return self._state_rows(rows), None
        keep = (~done).nonzero()[0]  # (B',) active sentences that go on
        keep_rows = (keep[:, None] * self.beam_size + np.arange(self.beam_size)).reshape(-1)  # (R',)
        self.sentence_ids = self.sentence_ids[keep]
        self.max_lens = self.max_lens[keep]
        self._limits()
        self.scores, self.lengths, self.finished = self.scores[keep], self.lengths[keep], self.finished[keep]
        self.normalised = self.normalised[keep]
        self.tokens = self.tokens[keep_rows]
        self.last_tokens = self.last_tokens[keep_rows]
        if self.attention is not None:
            self.attention = self.attention.index_select(
                0, torch.from_numpy(keep_rows).to(self.attention.device)
            )
        return self._state_rows(rows[keep_rows]), self._device(keep_rows)

    def _state_rows(self, rows: np.ndarray) -> Tensor:
        """rows (R,) of the state for the next step, with `skip_finished` -1 for those of
        finished hypotheses, on the engine's device."""
        return self._device(np.where(self.finished.reshape(-1), -1, rows) if self.skip_finished else rows)

    def _device(self, rows: np.ndarray) -> Tensor:
        return torch.from_numpy(rows).to(self.device)

    def _nbest(self, b: int) -> list[Hypothesis]:
        """The n best finished hypotheses of the b-th active sentence, best first."""
        # as Python numbers at once: reading them one by one from the arrays costs more
        ranked, scores = self.normalised[b].tolist(), self.scores[b].tolist()
        lengths, finished = self.lengths[b].tolist(), self.finished[b].tolist()
        order = sorted(range(self.beam_size), key=lambda k: -ranked[k])  # best first, ties: the first
        hypotheses: list[Hypothesis] = []
        for k in order:
            if len(hypotheses) == self.options.n_best:
                break
            if not (finished[k] and math.isfinite(scores[k])):
                continue  # still going (ranked below the n best), or never had a live candidate
            row, length = b * self.beam_size + k, lengths[k] - 1
            tokens = self.tokens[row, :length].tolist()
            attention = None if self.attention is None else self.attention[row, : length + 1]
            hypotheses.append(Hypothesis(tokens, ranked[k], scores[k], attention))
        return hypotheses


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    options: SearchConfig,
    max_len_cap: int | None = None,
    attention: bool = False,
    vocabulary: Tensor | None = None,
    outside: int = 0,
) -> list[list[Hypothesis]]:
    """Translate a batch: src (B, S) with lengths (B,) -> an n-best list for each sentence.

    Each step takes each row's `beam_size` best continuations from `model.decode_top_k`
    (`BeamBatch.advance_top_k`), or, when n-grams are blocked, which needs them all, the full
    log-probabilities from `model.decode_step` (`BeamBatch.advance`).

    With `attention`, every hypothesis carries its steps' attention over the source, its tokens'
    and its EOS's: the steps go through `decode_top_k_with_attention` / `decode_step_with_attention`
    instead (a model with attention only, `model.attends`; others raise NoAttention; see
    `nmt.models.step`). Without, no step computes or keeps any.

    With `vocabulary` (V',) (a shortlist's, `nmt.shortlist`), the steps compute the output layer
    over those target ids only (`model.with_vocabulary`), which returns tokens as vocabulary ids,
    its normaliser estimated with `outside` sampled ids outside them (`outside_sample`; 0: none)."""
    if vocabulary is not None:
        model = model.with_vocabulary(vocabulary, outside)
    beam = options.beam_size
    memory, state = model.encode(src, src_lengths)
    limits = max_lengths(src_lengths, options, max_len_cap)
    beams = BeamBatch(limits, options, attention, model.cheap_select, model.skips_finished)
    # the first step is the same for every beam of a sentence (BOS after the same source), so it
    # runs once per sentence, its result repeated for the beams; the state is then expanded to
    # the beams by the first selection below, and so is the memory, unless the model takes it
    # once per sentence: `grouped` beam rows share a memory row, `held` do now
    rows_per_input = beam
    grouped, held = (beam if model.memory_per_sentence else 1), beam
    while not beams.done:
        tokens = beams.next_tokens(rows_per_input)
        weights: Tensor | None = None  # (R, S): the step's attention, when asked for
        if options.no_repeat_ngram:
            if attention:
                log_probs, state, weights = model.decode_step_with_attention(tokens, memory, state)
            else:
                log_probs, state = model.decode_step(tokens, memory, state)
            if weights is not None:
                weights = weights.repeat_interleave(rows_per_input, dim=0)
            state_rows, memory_rows = beams.advance(
                log_probs.repeat_interleave(rows_per_input, dim=0), weights
            )
        else:
            if attention:
                row_best, row_tokens, eos, state, weights = model.decode_top_k_with_attention(
                    tokens, memory, state, beam
                )
            else:
                row_best, row_tokens, eos, state = model.decode_top_k(tokens, memory, state, beam)
            if rows_per_input > 1:
                row_best, row_tokens, eos = (
                    t.repeat_interleave(rows_per_input, dim=0) for t in (row_best, row_tokens, eos)
                )
                if weights is not None:
                    weights = weights.repeat_interleave(rows_per_input, dim=0)
            state_rows, memory_rows = beams.advance_top_k(row_best, row_tokens, eos, weights)
        if rows_per_input > 1:  # after the first step: from one row per sentence to one per beam
            state_rows = torch.div(state_rows, rows_per_input, rounding_mode="floor")  # -1 stays -1
            rows_per_input = 1
        state = model.select_state(state, state_rows)
        if memory_rows is None and held != grouped:
            memory_rows = torch.arange(beams.tokens.shape[0], device=src.device)  # every beam row
        if memory_rows is not None:  # beam rows -> memory rows: one per `grouped` of them
            memory = model.select_memory(
                memory, torch.div(memory_rows[::grouped], held, rounding_mode="floor")
            )
            held = grouped
    return beams.results
