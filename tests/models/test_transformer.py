from __future__ import annotations

import pytest
import torch

from nmt.models.transformer import sinusoids


def test_sinusoids():
    table = sinusoids(10, 6)
    assert table.shape == (10, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert sinusoids(4, 5).shape == (4, 5)


def test_memory_and_state_keys(batch, tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer"))
    memory, state = model.encode(batch.src, batch.src_lengths)
    assert list(memory) == ["src_mask", "cross_k0", "cross_v0", "cross_k1", "cross_v1"]
    assert list(state) == ["self_k0", "self_v0", "self_k1", "self_v1"]
    assert memory["cross_k1"].shape == (4, 4, batch.src.size(1), 8)  # (B, heads, S, d_model / heads)
    assert state["self_v0"].shape == (4, 4, 0, 8)
    for t in range(3):
        _, state = model.decode_step(batch.tgt_in[:, t], memory, state)
    assert state["self_k1"].shape == (4, 4, 3, 8)


def test_decode_step_never_recomputes_cross_attention_keys(batch, tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer"))
    memory, state = model.encode(batch.src, batch.src_lengths)
    calls = []
    for layer in model.decoder_layers:
        layer.cross_attn.k.register_forward_hook(lambda *args: calls.append("k"))
        layer.cross_attn.v.register_forward_hook(lambda *args: calls.append("v"))
    model.decode_step(batch.tgt_in[:, 0], memory, state)
    assert calls == []


@pytest.mark.parametrize("pre_norm", [True, False])
def test_final_layer_norm_only_with_pre_norm(pre_norm, tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer", pre_norm=pre_norm))
    assert isinstance(model.decoder_norm, torch.nn.LayerNorm) == pre_norm
    assert isinstance(model.encoder_norm, torch.nn.LayerNorm) == pre_norm


def test_longer_than_max_positions_is_an_error(tiny_config, tiny_model):
    model = tiny_model(tiny_config("transformer", max_positions=8))
    src = torch.full((1, 9), 5)
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(src, torch.tensor([9]))
    with pytest.raises(ValueError, match="max_positions"):
        model(src[:, :4], torch.tensor([4]), torch.full((1, 9), 5))


@torch.no_grad()
def test_alignment_layer_picks_the_cross_attention_heads_averaged(batch, tiny_config, tiny_model):
    """The attention returned is the chosen decoder layer's cross-attention, the mean of its heads."""
    model = tiny_model(tiny_config("transformer"))
    seen = {}

    def recording(index, attend):
        def wrapper(*args):
            out, weights = attend(*args)  # the cross-attention's own: step_cross is its only caller
            seen[index] = weights  # (B, N, 1, S)
            return out, weights

        return wrapper

    for i, layer in enumerate(model.decoder_layers):
        layer.cross_attn._attend = recording(i, layer.cross_attn._attend)
    memory, state = model.encode(batch.src, batch.src_lengths)
    tokens = batch.tgt_in[:, 0]
    for layer in (0, 1, -1):
        model.alignment_layer = layer % 2
        seen.clear()
        _, _, attention = model.decode_step_with_attention(tokens, memory, state)
        torch.testing.assert_close(attention, seen[layer % 2].mean(dim=1)[:, 0])


def test_alignment_layer_must_exist(tiny_config):
    assert tiny_config("transformer").alignment_layer == -1
    for layer in (1, -2):
        assert tiny_config("transformer", alignment_layer=layer).alignment_layer == layer
    with pytest.raises(ValueError, match="alignment_layer"):
        tiny_config("transformer", alignment_layer=2)
