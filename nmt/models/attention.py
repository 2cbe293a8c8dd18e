"""Attention for the recurrent decoder: one query against the encoder outputs of its sentence.

Three scores, all split in two halves so the half that depends only on the source is computed ONCE
per sentence in `encode` (`project_keys`) and reused at every decoder step (`forward`):

- `AdditiveAttention` (Bahdanau et al. 2015): score(q, k) = v^T tanh(W_q q + W_k k)
- `DotAttention` (Luong et al. 2015, "dot"): score(q, k) = q^T k
- `GeneralAttention` (Luong et al. 2015, "general"): score(q, k) = q^T W k

Queries come T at a time, (B, T, Q): one per decoder step. The step-by-step decoder passes T = 1;
a decoder without input feeding runs its LSTM over the whole target first and attends for all T
steps in one call, which is what makes it fast to train.
Masks are boolean, True = real source token; padded positions get exactly zero weight.
Letters: B batch, T queries, S source length, Q query size, K encoder output size, A attention size.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask (B, S): True where the position is a real token, given lengths (B,)."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


class Attention(nn.Module):
    """Base: masked softmax over source positions and the weighted sum of the encoder outputs."""

    def project_keys(self, encoder_outputs: Tensor) -> Tensor:
        """Encoder outputs (B, S, K) -> keys (B, S, *) in the form `score` expects."""
        raise NotImplementedError

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """Queries (B, T, Q) and projected keys (B, S, *) -> unnormalised scores (B, T, S)."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Queries (B, T, Q), keys (B, S, *), values (B, S, K), mask (B, S)
        -> context (B, T, K), weights (B, T, S)."""
        scores = self.score(query, keys).masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, T, S), exactly 0 where mask is False
        return torch.bmm(weights, values), weights


class AdditiveAttention(Attention):
    """Bahdanau's additive score v^T tanh(W_q q + W_k k); W_k k is the precomputed key."""

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_dim, attention_dim, bias=False)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, encoder_outputs: Tensor) -> Tensor:
        return self.key_proj(encoder_outputs)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        hidden = torch.tanh(keys.unsqueeze(1) + self.query_proj(query).unsqueeze(2))  # (B, T, S, A)
        return self.v(hidden).squeeze(-1)  # (B, T, S)


class DotAttention(Attention):
    """Luong's dot score q^T k. It needs keys of the query's size: when the encoder output size
    differs (a bidirectional encoder gives 2H for an H-sized decoder), a linear map brings the
    encoder outputs to the query size once, in `encode`."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Identity() if key_dim == query_dim else nn.Linear(key_dim, query_dim, bias=False)

    def project_keys(self, encoder_outputs: Tensor) -> Tensor:
        return self.key_proj(encoder_outputs)  # (B, S, Q)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


class GeneralAttention(DotAttention):
    """Luong's general score q^T W k, computed as a dot product with the precomputed key W k."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__(query_dim, key_dim)
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)


def build_attention(
    kind: Literal["bahdanau", "luong_dot", "luong_general"], query_dim: int, key_dim: int
) -> Attention:
    """The scorer named by `AttentionLSTMConfig.attention`."""
    match kind:
        case "bahdanau":
            return AdditiveAttention(query_dim, key_dim, attention_dim=query_dim)
        case "luong_dot":
            return DotAttention(query_dim, key_dim)
        case "luong_general":
            return GeneralAttention(query_dim, key_dim)
    raise ValueError(f"unknown attention: {kind!r}")
