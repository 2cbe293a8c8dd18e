"""The typed seam between a model and what drives it: the search, the translator, the exporters.

`Seq2Seq` is what the search needs of any model, whatever runs it (a PyTorch model of
`nmt.models`, the ONNX Runtime backend); mypy checks every model and backend against it:

    encode(src (B, S), src_lengths (B,)) -> (memory, state)
    decode_step(prev_tokens (R,), memory, state) -> (log_probs (R, V) float32, new_state)
    decode_top_k(prev_tokens (R,), memory, state, k) -> (best (R, k'), tokens (R, k'), eos (R,), new_state)
    select_memory(memory, rows), select_state(state, rows): rows (dim 0) of each
    memory_per_sentence: the memory layout (below)
    cheap_select: whether selecting fewer rows costs no more than the step's own reordering (an
      engine that gathers its state inside every step): the search then drops a sentence's rows
      as soon as it is decided, instead of waiting until half the batch is
    skips_finished: whether a state row -1 in `select_state` means a row the next steps need not
      compute (their outputs are then anything): the search gives -1 for its finished
      hypotheses, which a beam keeps until its sentence is decided (6% of the rows of a test run)

memory is what stays fixed while a sentence is decoded (always "src_mask" (B, S), True = real
token), state what changes at every step; both map the model's own keys, fixed for a given
config, to tensors with the batch on dim 0. `decode_top_k` is each row's k best continuations
other than `nmt.search.BANNED_IDS`, best first (k' = k, or V - 2 when that is smaller), with the
EOS log-probabilities: an engine may rank without materialising (R, V) log-probabilities (the
ONNX backend does); here it is the plain top k of `decode_step`.

The memory layout. With `memory_per_sentence` False, memory has one row per decoded row: the
search selects the beams' rows from it like the state's. With True, memory keeps one row per
sentence while the R = B * G rows decoded are G consecutive hypotheses of each of its B
sentences (G = R / B; G = 1 is the plain layout): cross-attention then runs as one (G, Dh) x
(Dh, S) product per sentence instead of G single-row ones against G copies of the same keys,
and the search never copies the memory beam by beam; it selects sentences.

`Seq2SeqModel` is the base of the PyTorch models. Their `decode_step` is made of two parts
every model has, which exporters trace: the decoder's features and the output projection

    decode_features(prev_tokens (R,), memory, state) -> (features (R, E), new_state)
    projection: nn.Linear, E -> V (the target embedding when tied)
    decode_step = log_softmax(projection(features)), in float32

A model with attention (`attends`) also offers the step with its attention over the source,
which the search asks for only when alignments are wanted:

    decode_step_with_attention -> (log_probs (R, V), new_state, attention (R, S))
    decode_top_k_with_attention -> (best, tokens, eos, new_state, attention (R, S))
    decode_features_with_attention(prev_tokens, memory, state) -> (features, new_state, attention (R, S))
      (`Seq2SeqModel`: the part exporters trace)

The weights of each row sum to 1 over its real source tokens (EOS included) and are 0 at padding.
`decode_step` and `decode_top_k` never compute more than they return: the attention is a
separate call, so asking for none costs nothing. A model without attention (`attends` False)
raises `nmt.errors.NoAttention` from these.

Vocabulary shortlists (`nmt.shortlist`): `with_vocabulary(vocabulary (V',))` is the same model
decoding over those target ids only (sorted, starting with the specials 0..3): its output layer
computes V' rows instead of V (`with_vocabulary(vocabulary, outside)`: and M = `outside`
sampled rows outside them, which estimate the rest of the normaliser, `nmt.search.outside_sample`),
and what it returns is in vocabulary ids as before: `decode_top_k`'s tokens are ids (the positions in the
subset mapped back), `decode_step`'s (R, V) log-probabilities are -inf outside the subset.
BANNED_IDS stay banned. The search takes it for one batch (`beam_search(..., vocabulary=)`).

The ONNX decoder graph ranks the projection's outputs without materialising the
log-probabilities (see `nmt.export.onnx_head`). What else a model can do is declared by its
config (`nmt.config`: position_limit, export_formats, architecture).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional

from nmt.errors import NoAttention
from nmt.search import BANNED_IDS, outside_sample, select
from nmt.specials import EOS_ID

Tensors = Mapping[str, Tensor]  # a memory or a state: the model's keys -> (B or R, ...) tensors


class Seq2Seq(Protocol):
    """What the search needs of a model; see the module docstring."""

    @property
    def memory_per_sentence(self) -> bool: ...

    @property
    def attends(self) -> bool: ...

    @property
    def cheap_select(self) -> bool: ...

    @property
    def skips_finished(self) -> bool: ...

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensors, Tensors]: ...

    def decode_step(self, prev_tokens: Tensor, memory: Tensors, state: Tensors) -> tuple[Tensor, Tensors]: ...

    def decode_top_k(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensors]: ...

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, Tensors, Tensor]: ...

    def decode_top_k_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensors, Tensor]: ...

    def select_memory(self, memory: Tensors, rows: Tensor) -> Tensors: ...

    def select_state(self, state: Tensors, rows: Tensor) -> Tensors: ...

    def with_vocabulary(self, vocabulary: Tensor, outside: int = 0) -> Seq2Seq: ...


def _top_k(log_probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The plain top k of log-probabilities (R, V), a new tensor it modifies: best, tokens, eos."""
    log_probs[:, BANNED_IDS] = -math.inf
    best, tokens = log_probs.topk(min(k, log_probs.size(1) - len(BANNED_IDS)), dim=1)
    return best, tokens, log_probs[:, EOS_ID]


class Slots(NamedTuple):
    """R' of the B * G rows of a decoding step (G consecutive rows per sentence), the others
    left out (a search's finished hypotheses, whose steps nothing reads): grid (B * G,) the row
    among the R' in each place, R' where none is (it attends with a zero query); rows (R',)
    each row's place. Only attention over the memory groups rows by sentence, so only it needs
    them (the Transformer's cross-attention, the attention RNNs' attention)."""

    grid: Tensor
    rows: Tensor


class TensorSeam:
    """The search's hooks for a model whose memory and state are tensors it computes whole:
    rows picked with `index_select`, the top k taken from `decode_step`'s log-probabilities
    (with attention: from `decode_step_with_attention`'s)."""

    memory_per_sentence = False
    attends = False  # whether the model has attention over the source to return
    cheap_select = False  # selecting rows copies every state tensor (see `Seq2Seq`)
    skips_finished = False  # every row is computed (see `Seq2Seq`)
    takes_slots = False  # whether `decode_features` computes any rows of its grid (`Slots`)

    def decode_step(self, prev_tokens: Tensor, memory: Tensors, state: Tensors) -> tuple[Tensor, Tensors]:
        raise NotImplementedError

    def decode_top_k(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensors]:
        log_probs, state = self.decode_step(prev_tokens, memory, state)  # (R, V), a new tensor
        return (*_top_k(log_probs, k), state)

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, Tensors, Tensor]:
        raise NoAttention(f"{type(self).__name__} has no attention")

    def decode_top_k_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensors, Tensor]:
        log_probs, state, attention = self.decode_step_with_attention(prev_tokens, memory, state)
        return (*_top_k(log_probs, k), state, attention)

    def select_memory(self, memory: Tensors, rows: Tensor) -> dict[str, Tensor]:
        return select(memory, rows)

    def select_state(self, state: Tensors, rows: Tensor) -> dict[str, Tensor]:
        return select(state, rows)


class Seq2SeqModel(TensorSeam, nn.Module):
    """Base of the PyTorch models: `decode_step` from `decode_features` and `projection` (and,
    with attention, `decode_step_with_attention` from `decode_features_with_attention`), and the
    plain hooks of `TensorSeam`. `forward(src, src_lengths, tgt_in)` is teacher forcing."""

    src_vocab_size: int
    tgt_vocab_size: int

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        raise NotImplementedError

    def encode_for_export(
        self, src: Tensor, src_lengths: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """`encode`, and tensors an exported encoder graph must return besides (by name; nothing
        reads them): a model's way around an exporter bug. None by default."""
        memory, state = self.encode(src, src_lengths)
        return memory, state, {}

    @property
    def projection(self) -> nn.Linear:
        raise NotImplementedError

    def decode_features(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def decode_features_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """As `decode_features`, with the step's attention over the source (R, S)."""
        raise NoAttention(f"{type(self).__name__} has no attention")

    def decode_step(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prev_tokens (R,) -> log-probabilities (R, V) float32 and the new state."""
        features, new_state = self.decode_features(prev_tokens, memory, state)
        return self.projection(features).float().log_softmax(dim=-1), new_state

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """prev_tokens (R,) -> log-probabilities (R, V) float32, the new state and the step's
        attention over the source (R, S)."""
        features, new_state, attention = self.decode_features_with_attention(prev_tokens, memory, state)
        return self.projection(features).float().log_softmax(dim=-1), new_state, attention

    def with_vocabulary(self, vocabulary: Tensor, outside: int = 0) -> Shortlisted:
        """This model decoding over the target ids `vocabulary` (V',) only, its normaliser
        estimated with `outside` sampled ids outside them (see the module docstring)."""
        return Shortlisted(self, vocabulary, outside)


class Shortlisted(TensorSeam):
    """A `Seq2SeqModel` whose steps compute the output layer over the rows `vocabulary` (V',)
    only: sorted target ids starting with the specials (`nmt.shortlist.Shortlist.vocabulary`).
    The rows of the weight and bias are gathered once, here (one batch's worth of decoding);
    encoding and the selection of rows are the model's."""

    def __init__(self, model: Seq2SeqModel, vocabulary: Tensor, outside: int = 0) -> None:
        projection = model.projection
        self.model = model
        self.vocabulary = vocabulary.to(projection.weight.device)  # (V',)
        self.weight = projection.weight.index_select(0, self.vocabulary)  # (V', E)
        self.bias = None if projection.bias is None else projection.bias.index_select(0, self.vocabulary)
        # `outside` sampled ids outside the vocabulary, for the normaliser (`outside_sample`)
        sample, self.outside_log_weight = outside_sample(self.vocabulary, projection.weight.size(0), outside)
        self.outside_weight = projection.weight.index_select(0, sample)  # (M, E)
        self.outside_bias = None if projection.bias is None else projection.bias.index_select(0, sample)
        self.vocab_size = projection.weight.size(0)
        positions = {int(token): i for i, token in enumerate(self.vocabulary[:8].tolist())}
        if positions.get(EOS_ID) != EOS_ID or any(positions.get(t) != t for t in BANNED_IDS):
            raise ValueError("a shortlist vocabulary starts with the special ids 0..3, in order")
        self.memory_per_sentence = model.memory_per_sentence
        self.attends = model.attends

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return self.model.encode(src, src_lengths)

    def with_vocabulary(self, vocabulary: Tensor, outside: int = 0) -> Shortlisted:
        return Shortlisted(self.model, vocabulary, outside)

    def _log_probs(self, features: Tensor) -> Tensor:
        """(R, E) -> (R, V') log-probabilities of the subset's ids, float32: normalised over the
        subset and the sampled ids outside it, each standing for its share of the rest."""
        logits = functional.linear(features, self.weight, self.bias).float()
        if self.outside_weight.size(0) == 0:
            return logits.log_softmax(dim=-1)
        outside = functional.linear(features, self.outside_weight, self.outside_bias).float()
        normaliser = torch.logaddexp(
            logits.logsumexp(dim=-1, keepdim=True),
            outside.logsumexp(dim=-1, keepdim=True) + self.outside_log_weight,
        )  # (R, 1)
        return logits - normaliser

    def _full(self, log_probs: Tensor) -> Tensor:
        """(R, V') -> (R, V), -inf outside the subset."""
        full = log_probs.new_full((log_probs.size(0), self.vocab_size), -math.inf)
        return full.index_copy_(1, self.vocabulary, log_probs)

    def _top_k(self, log_probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """`_top_k` over the subset (the banned ids sit at their own positions), tokens as ids."""
        best, positions, eos = _top_k(log_probs, k)
        return best, self.vocabulary[positions], eos

    def decode_step(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor]]:
        features, new_state = self.model.decode_features(prev_tokens, memory, state)
        return self._full(self._log_probs(features)), new_state

    def decode_top_k(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        features, new_state = self.model.decode_features(prev_tokens, memory, state)
        return (*self._top_k(self._log_probs(features), k), new_state)

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        features, new_state, attention = self.model.decode_features_with_attention(prev_tokens, memory, state)
        return self._full(self._log_probs(features)), new_state, attention

    def decode_top_k_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, k: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], Tensor]:
        features, new_state, attention = self.model.decode_features_with_attention(prev_tokens, memory, state)
        return (*self._top_k(self._log_probs(features), k), new_state, attention)

    def select_memory(self, memory: Tensors, rows: Tensor) -> dict[str, Tensor]:
        return dict(self.model.select_memory(memory, rows))

    def select_state(self, state: Tensors, rows: Tensor) -> dict[str, Tensor]:
        return dict(self.model.select_state(state, rows))
