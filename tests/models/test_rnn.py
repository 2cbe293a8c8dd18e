from __future__ import annotations

from unittest import mock

import pytest
import torch

from nmt.models import cells
from nmt.models.rnn import RNNEncoder

STATE_KEYS = {"lstm": ["h", "c"], "gru": ["h"], "rnn": ["h"]}


@pytest.mark.parametrize("cell", list(STATE_KEYS))
@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_skips_padding_and_returns_final_states_per_layer(cell, bidirectional, batch, tiny_config):
    cfg = tiny_config("rnn", cell=cell, bidirectional=bidirectional, layers=2)
    torch.manual_seed(0)
    encoder = RNNEncoder(cfg, vocab_size=37).eval()
    with torch.no_grad():
        outputs, final = encoder(batch.src, batch.src_lengths)
    size = 48 if bidirectional else 24
    assert outputs.shape == (4, batch.src.size(1), size)
    assert list(final) == STATE_KEYS[cell]
    assert all(tensor.shape == (4, 2, size) for tensor in final.values())
    h = final["h"]
    assert (outputs[batch.src == 0] == 0).all()
    last = batch.src_lengths - 1
    forward_top = outputs[torch.arange(4), last, :24]  # forward direction at each sentence's last token
    torch.testing.assert_close(h[:, -1, :24], forward_top)
    if bidirectional:  # the backward direction ends at position 0
        torch.testing.assert_close(h[:, -1, 24:], outputs[:, 0, 24:])


@pytest.mark.parametrize("cell", list(STATE_KEYS))
@pytest.mark.parametrize("context_every_step", [True, False])
def test_rnn_keys(cell, context_every_step, batch, tiny_config, tiny_model):
    model = tiny_model(tiny_config("rnn", cell=cell, context_every_step=context_every_step))
    memory, state = model.encode(batch.src, batch.src_lengths)
    assert list(memory) == (["src_mask", "context", "context_gates"] if context_every_step else ["src_mask"])
    assert list(state) == STATE_KEYS[cell]
    assert all(tensor.shape == (4, 2, 24) for tensor in state.values())
    if context_every_step:
        torch.testing.assert_close(memory["context"], state["h"][:, -1])
        # the context's part of the decoder's first input product, computed once per sentence
        weight = model.decoder.weight_ih_l0[:, model.tgt_embed.embedding_dim :]
        torch.testing.assert_close(memory["context_gates"], memory["context"] @ weight.T)


@pytest.mark.parametrize("cell", list(STATE_KEYS))
@pytest.mark.parametrize("input_feeding", [True, False])
def test_attention_rnn_keys(cell, input_feeding, batch, tiny_config, tiny_model):
    cfg = tiny_config("rnn_attention", cell=cell, attention="bahdanau", input_feeding=input_feeding)
    memory, state = tiny_model(cfg).encode(batch.src, batch.src_lengths)
    assert list(memory) == ["src_mask", "encoder_outputs", "keys"]
    assert list(state) == STATE_KEYS[cell] + (["feed"] if input_feeding else [])
    assert memory["encoder_outputs"].shape == (4, batch.src.size(1), 48)
    assert memory["keys"].shape == (4, batch.src.size(1), 24)
    if input_feeding:
        assert (state["feed"] == 0).all() and state["feed"].shape == (4, 24)


def test_attention_keys_are_projected_once_in_encode(batch, tiny_config, tiny_model):
    model = tiny_model(tiny_config("rnn_attention", attention="bahdanau"))
    memory, state = model.encode(batch.src, batch.src_lengths)
    calls = []
    model.attention.key_proj.register_forward_hook(lambda *args: calls.append(1))
    model.decode_step(batch.tgt_in[:, 0], memory, state)
    assert calls == []


def test_rnn_without_attention_sees_the_source_only_through_its_state(batch, tiny_config, tiny_model):
    """Two different sources with the same bridged state must give the same predictions."""
    model = tiny_model(tiny_config("rnn", context_every_step=False))
    memory, state = model.encode(batch.src, batch.src_lengths)
    other_memory, _ = model.encode(batch.src.flip(0), batch.src_lengths.flip(0))
    first, _ = model.decode_step(batch.tgt_in[:, 0], memory, state)
    second, _ = model.decode_step(batch.tgt_in[:, 0], other_memory, state)
    torch.testing.assert_close(first, second)


def test_weights_saved_before_cells_load(tiny_config, tiny_model):
    """Bundles and checkpoints from before cells name the encoder's network "lstm" ("rnn" today)."""
    model = tiny_model(tiny_config("rnn_attention"))
    old = {key.replace("encoder.rnn.", "encoder.lstm."): value for key, value in model.state_dict().items()}
    assert any(key.startswith("encoder.lstm.") for key in old)
    fresh = tiny_model(tiny_config("rnn_attention"), seed=1)
    fresh.load_state_dict(old, strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def _steps(model, batch, steps: int = 3) -> list[torch.Tensor]:
    """The log-probabilities of the first `steps` decoding steps, teacher-forced, and the attention."""
    memory, state = model.encode(batch.src, batch.src_lengths)
    found = []
    for t in range(steps):
        if model.attends:
            log_probs, state, attention = model.decode_step_with_attention(batch.tgt_in[:, t], memory, state)
            found.append(attention)
        else:
            log_probs, state = model.decode_step(batch.tgt_in[:, t], memory, state)
        found.extend([log_probs, *state.values()])
    return found


@pytest.mark.parametrize("cell", list(STATE_KEYS))
@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("rnn", {"context_every_step": True}),
        ("rnn", {"context_every_step": False, "layers": 1}),
        ("rnn_attention", {"input_feeding": True}),
        ("rnn_attention", {"input_feeding": False}),
    ],
)
def test_a_step_from_the_token_table_is_the_networks_step(
    cell, arch, options, batch, tiny_config, tiny_model
):
    """Decoding, the first layer's input product comes from the per-token table (`TokenGates`)
    and the cell is written out (`step_cell`); it gives what PyTorch's network gives, which a
    table over the memory limit falls back to, as training and gradients do."""
    model = tiny_model(tiny_config(arch, cell=cell, **options))
    with torch.no_grad():
        assert cells.TokenGates.usable(model.decoder, model.tgt_embed.weight)
        tabled = _steps(model, batch)
        assert model.token_gates._table._value is not None, "the step must have used the table"
    plain = tiny_model(tiny_config(arch, cell=cell, **options))
    with torch.no_grad(), mock.patch.object(cells, "TOKEN_GATES_LIMIT", 0):
        assert not cells.TokenGates.usable(plain.decoder, plain.tgt_embed.weight)
        expected = _steps(plain, batch)
    assert plain.token_gates._table._value is None
    for got, want in zip(tabled, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not cells.TokenGates.usable(model.decoder, model.tgt_embed.weight), "gradients: the network's step"
    with torch.no_grad():
        assert not cells.TokenGates.usable(model.train().decoder, model.tgt_embed.weight)
