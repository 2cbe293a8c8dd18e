from __future__ import annotations

import pytest
from torch import nn

from nmt.models import AttentionRNNSeq2Seq, RNNSeq2Seq, TransformerSeq2Seq, build_model
from nmt.specials import PAD_ID


@pytest.mark.parametrize(
    ("arch", "overrides", "cls"),
    [
        ("transformer", {"share_embeddings": False}, TransformerSeq2Seq),
        ("rnn", {}, RNNSeq2Seq),
        ("rnn_attention", {}, AttentionRNNSeq2Seq),
    ],
)
def test_build_model_picks_the_class(arch, overrides, cls, tiny_config):
    model = build_model(tiny_config(arch, **overrides), 37, 41)
    assert type(model) is cls
    assert (model.src_vocab_size, model.tgt_vocab_size) == (37, 41)


def test_build_model_rejects_other_objects():
    with pytest.raises(TypeError):
        build_model(object(), 37, 37)


def test_shared_embeddings_need_one_vocabulary(tiny_config):
    with pytest.raises(ValueError, match="share_embeddings"):
        build_model(tiny_config("transformer", share_embeddings=True), 37, 41)


def test_transformer_shared_embeddings_are_one_matrix(tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer", share_embeddings=True))
    assert len({m.weight.data_ptr() for m in (model.src_embed, model.tgt_embed, model.output)}) == 1


def test_transformer_separate_embeddings_still_tie_the_output(tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer", share_embeddings=False))
    assert model.tgt_embed.weight.data_ptr() == model.output.weight.data_ptr()
    assert model.src_embed.weight.data_ptr() != model.tgt_embed.weight.data_ptr()
    assert (model.src_embed.num_embeddings, model.tgt_embed.num_embeddings) == (37, 41)


@pytest.mark.parametrize("arch", ["rnn", "rnn_attention"])
@pytest.mark.parametrize(("cell", "module"), [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)])
def test_the_cell_picks_the_encoder_and_decoder_networks(arch, cell, module, tiny_config, tiny_model):
    model = tiny_model(tiny_config(arch, cell=cell))
    assert type(model.encoder.rnn) is module and type(model.decoder) is module
    if cell == "rnn":
        assert model.decoder.nonlinearity == "tanh"  # Elman's network
    assert (model.bridge.c is not None) == (cell == "lstm")  # only the LSTM carries a cell state


@pytest.mark.parametrize("arch", ["rnn", "rnn_attention"])
def test_rnn_tie_embeddings(arch, tiny_config, tiny_model):
    tied = tiny_model(tiny_config(arch, tie_embeddings=True))
    assert tied.tgt_embed.weight.data_ptr() == tied.output.proj.weight.data_ptr()
    assert tied.output.pre_output.weight.shape == (16, 24)  # hidden 24 -> embedding 16
    untied = tiny_model(tiny_config(arch, tie_embeddings=False))
    assert untied.tgt_embed.weight.data_ptr() != untied.output.proj.weight.data_ptr()
    assert untied.output.proj.weight.shape == (41, 24)


def test_padding_embeddings_start_at_zero(model):
    source = model.src_embed if isinstance(model, TransformerSeq2Seq) else model.encoder.embed
    for embedding in (source, model.tgt_embed):
        assert embedding.weight[PAD_ID].abs().sum() == 0
