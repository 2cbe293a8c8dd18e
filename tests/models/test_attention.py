from __future__ import annotations

import pytest
import torch

from nmt.models.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    build_attention,
    padding_mask,
)


def test_padding_mask():
    assert padding_mask(torch.tensor([3, 1]), 4).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
    ]


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_weights_sum_to_one_and_skip_padding(kind):
    torch.manual_seed(0)
    attention = build_attention(kind, query_dim=8, key_dim=12)
    outputs, query = torch.randn(3, 5, 12), torch.randn(3, 2, 8)  # two queries per sentence
    mask = padding_mask(torch.tensor([5, 2, 1]), 5)
    context, weights = attention(query, attention.project_keys(outputs), outputs, mask)
    assert context.shape == (3, 2, 12) and weights.shape == (3, 2, 5)
    assert (weights.transpose(0, 1)[:, ~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    torch.testing.assert_close(context, torch.einsum("bts,bsk->btk", weights, outputs))


def test_scores_follow_their_formulas():
    torch.manual_seed(0)
    query, outputs = torch.randn(2, 3, 6), torch.randn(2, 4, 6)  # (B, T, Q), (B, S, K)
    additive = AdditiveAttention(6, 6, attention_dim=5)
    keys = additive.project_keys(outputs)
    expected = additive.v(
        torch.tanh(additive.query_proj(query)[:, :, None] + additive.key_proj(outputs)[:, None])
    ).squeeze(-1)
    torch.testing.assert_close(additive.score(query, keys), expected)
    dot = DotAttention(6, 6)
    torch.testing.assert_close(
        dot.score(query, dot.project_keys(outputs)), torch.einsum("btq,bsq->bts", query, outputs)
    )
    general = GeneralAttention(6, 6)
    expected = torch.einsum("btq,qk,bsk->bts", query, general.key_proj.weight, outputs)
    torch.testing.assert_close(general.score(query, general.project_keys(outputs)), expected)


def test_dot_projects_keys_only_when_sizes_differ():
    assert isinstance(DotAttention(8, 8).key_proj, torch.nn.Identity)
    assert DotAttention(8, 16).project_keys(torch.randn(2, 3, 16)).shape == (2, 3, 8)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_model_gives_padded_source_positions_zero_weight(kind, batch, tiny_config, tiny_model):
    model = tiny_model(tiny_config("rnn_attention", attention=kind))
    seen = []
    model.attention.register_forward_hook(lambda module, args, output: seen.append(output[1]))
    with torch.no_grad():
        model(batch.src, batch.src_lengths, batch.tgt_in)
    mask = (batch.src != 0).unsqueeze(1)  # (B, 1, S)
    assert len(seen) == batch.tgt_in.size(1)
    for weights in seen:  # (B, 1, S), one step at a time (input feeding)
        assert (weights[~mask.expand_as(weights)] == 0).all()
        assert (weights[mask.expand_as(weights)] > 0).all()
