"""The contract every model keeps with search, training and export (`nmt.models.step`): forward /
encode / decode_step, the search's hooks, and the memory layout each model declares."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.errors import NoAttention
from nmt.models.step import Slots
from nmt.search import BANNED_IDS
from nmt.specials import EOS_ID, PAD_ID


def decode_all(model, src, src_lengths, tgt_in):
    """Log-probabilities (B, T, V) from encode + one decode_step per target position."""
    memory, state = model.encode(src, src_lengths)
    steps = []
    for t in range(tgt_in.size(1)):
        log_probs, state = model.decode_step(tgt_in[:, t], memory, state)
        steps.append(log_probs)
    return torch.stack(steps, dim=1)


@torch.no_grad()
def test_decode_step_matches_forward(model, batch):
    expected = model(batch.src, batch.src_lengths, batch.tgt_in).log_softmax(dim=-1)
    stepped = decode_all(model, batch.src, batch.src_lengths, batch.tgt_in)
    assert expected.shape == (*batch.tgt_in.shape, model.tgt_vocab_size)
    torch.testing.assert_close(stepped[batch.tgt_mask], expected[batch.tgt_mask], atol=1e-5, rtol=0)


@torch.no_grad()
def test_source_padding_is_ignored(model, batch):
    """Extra PAD columns, or any token at all in padded positions, leave every real output unchanged."""
    expected = model(batch.src, batch.src_lengths, batch.tgt_in)
    padded = F.pad(batch.src, (0, 3), value=PAD_ID)
    garbage = padded.clone()
    garbage[padded == PAD_ID] = 5
    for src in (padded, garbage):
        logits = model(src, batch.src_lengths, batch.tgt_in)
        torch.testing.assert_close(logits[batch.tgt_mask], expected[batch.tgt_mask], atol=1e-5, rtol=0)
        stepped = decode_all(model, src, batch.src_lengths, batch.tgt_in)
        torch.testing.assert_close(
            stepped[batch.tgt_mask], expected.log_softmax(-1)[batch.tgt_mask], atol=1e-5, rtol=0
        )


@torch.no_grad()
def test_memory_and_state_are_batch_first_with_fixed_keys(model, batch):
    size = batch.src.size(0)
    memory, state = model.encode(batch.src, batch.src_lengths)
    assert memory["src_mask"].dtype == torch.bool
    assert memory["src_mask"].tolist() == (batch.src != PAD_ID).tolist()
    for _ in range(2):
        log_probs, new_state = model.decode_step(batch.tgt_in[:, 0], memory, state)
        assert list(new_state) == list(state)
        assert log_probs.shape == (size, model.tgt_vocab_size) and log_probs.dtype == torch.float32
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(size))
        state = new_state
    for name, tensor in {**memory, **state}.items():
        assert isinstance(tensor, torch.Tensor) and tensor.size(0) == size, name


@torch.no_grad()
def test_decode_step_leaves_its_inputs_alone(model, batch):
    memory, state = model.encode(batch.src, batch.src_lengths)
    _, state = model.decode_step(batch.tgt_in[:, 0], memory, state)
    before = {name: t.clone() for name, t in {**memory, **state}.items()}
    model.decode_step(batch.tgt_in[:, 1], memory, state)
    for name, tensor in {**memory, **state}.items():
        assert torch.equal(tensor, before[name]), name


@torch.no_grad()
def test_reordering_memory_and_state_reorders_the_outputs(model, batch):
    """What beam search does: index_select(0, idx) on every tensor, then keep decoding."""
    memory, state = model.encode(batch.src, batch.src_lengths)
    for t in range(3):
        _, state = model.decode_step(batch.tgt_in[:, t], memory, state)
    expected, _ = model.decode_step(batch.tgt_in[:, 3], memory, state)
    order = torch.tensor([2, 2, 0, 3])
    memory = {name: t.index_select(0, order) for name, t in memory.items()}
    state = {name: t.index_select(0, order) for name, t in state.items()}
    log_probs, _ = model.decode_step(batch.tgt_in[:, 3].index_select(0, order), memory, state)
    torch.testing.assert_close(log_probs, expected.index_select(0, order), atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter(model, batch):
    model.train()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())


@torch.no_grad()
def test_attention_is_a_distribution_over_each_source(model, batch):
    """decode_step_with_attention: decode_step's results, and per row weights over its source's
    tokens (EOS included) that sum to 1, zero at padding. A model without attention has none."""
    memory, state = model.encode(batch.src, batch.src_lengths)
    if not model.attends:
        with pytest.raises(NoAttention, match="has no attention"):
            model.decode_step_with_attention(batch.tgt_in[:, 0], memory, state)
        with pytest.raises(NoAttention, match="has no attention"):
            model.decode_top_k_with_attention(batch.tgt_in[:, 0], memory, state, 4)
        return
    for t in range(3):
        expected, expected_state = model.decode_step(batch.tgt_in[:, t], memory, state)
        log_probs, state, attention = model.decode_step_with_attention(batch.tgt_in[:, t], memory, state)
        torch.testing.assert_close(log_probs, expected, atol=1e-6, rtol=0)
        for name, tensor in expected_state.items():
            torch.testing.assert_close(state[name], tensor, atol=1e-6, rtol=0)
        assert attention.shape == batch.src.shape
        torch.testing.assert_close(attention.sum(-1), torch.ones(batch.src.size(0)))
        assert (attention[batch.src == PAD_ID] == 0).all() and (attention >= 0).all()


@torch.no_grad()
def test_decode_top_k_with_attention_is_decode_top_k_and_the_steps_attention(model, batch):
    if not model.attends:
        return  # see test_attention_is_a_distribution_over_each_source
    memory, state = model.encode(batch.src, batch.src_lengths)
    tokens = batch.tgt_in[:, 0]
    *expected, expected_state = model.decode_top_k(tokens, memory, state, 4)
    _, _, expected_attention = model.decode_step_with_attention(tokens, memory, state)
    *found, new_state, attention = model.decode_top_k_with_attention(tokens, memory, state, 4)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(attention, expected_attention, atol=1e-6, rtol=0)
    assert new_state.keys() == expected_state.keys()


@torch.no_grad()
def test_memory_taken_once_per_sentence_decodes_as_memory_copied_per_row(model, batch):
    """The memory layout (`memory_per_sentence`): G consecutive rows per sentence against one
    memory row each give what each row gives against its own copy of the memory."""
    group = 3
    expand = torch.arange(batch.src.size(0)).repeat_interleave(group)  # (R,) = (B * G,)
    memory, state = model.encode(batch.src, batch.src_lengths)
    per_row = model.select_memory(memory, expand)
    own = memory if model.memory_per_sentence else per_row
    state = expanded = model.select_state(state, expand)
    for t in range(3):
        tokens = batch.tgt_in[:, t].index_select(0, expand)
        log_probs, state = model.decode_step(tokens, own, state)
        expected, expanded = model.decode_step(tokens, per_row, expanded)
        torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=0)
        if model.attends:  # the attention too, one row per decoded row
            _, _, attention = model.decode_step_with_attention(tokens, own, state)
            _, _, expected_attention = model.decode_step_with_attention(tokens, per_row, expanded)
            assert attention.shape == (expand.numel(), batch.src.size(1))
            torch.testing.assert_close(attention, expected_attention, atol=1e-5, rtol=0)


@torch.no_grad()
def test_decode_top_k_is_the_top_k_of_decode_step_without_banned_tokens(model, batch):
    memory, state = model.encode(batch.src, batch.src_lengths)
    log_probs, expected_state = model.decode_step(batch.tgt_in[:, 0], memory, state)
    best, tokens, eos, new_state = model.decode_top_k(batch.tgt_in[:, 0], memory, state, 4)
    assert best.shape == tokens.shape == (batch.src.size(0), 4)
    assert not torch.isin(tokens, torch.tensor(BANNED_IDS)).any()
    torch.testing.assert_close(best, log_probs.gather(1, tokens), atol=1e-6, rtol=0)
    log_probs[:, BANNED_IDS] = float("-inf")
    torch.testing.assert_close(best, log_probs.topk(4, dim=1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(eos, log_probs[:, EOS_ID], atol=1e-6, rtol=0)
    assert new_state.keys() == expected_state.keys()


@pytest.mark.parametrize("arch", ["transformer", "rnn", "rnn_attention"])
def test_decoding_follows_weights_changed_in_place(arch, batch, tiny_config, tiny_model):
    """What a decoding step derives from the weights and keeps between steps (the Transformer's
    fused query/key/value matrix, a recurrent decoder's per-token input product): an optimizer
    step (weights changed in place) or loading other weights must not leave it stale."""
    model = tiny_model(tiny_config(arch))
    tokens = batch.tgt_in[:, 0]

    def first_step() -> torch.Tensor:
        memory, state = model.encode(batch.src, batch.src_lengths)
        return model.decode_step(tokens, memory, state)[0]

    def teacher_forced() -> torch.Tensor:
        return model(batch.src, batch.src_lengths, batch.tgt_in[:, :1])[:, 0].log_softmax(-1)

    with torch.inference_mode():
        before = first_step()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.5)
        torch.testing.assert_close(first_step(), teacher_forced(), atol=1e-5, rtol=0)
        assert not torch.allclose(first_step(), before)
        model.load_state_dict(tiny_model(tiny_config(arch), seed=1).state_dict())
        torch.testing.assert_close(first_step(), teacher_forced(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("transformer", {}),
        ("rnn_attention", {"input_feeding": True}),
        ("rnn_attention", {"input_feeding": False, "cell": "gru"}),
        ("rnn", {}),
    ],
)
@torch.no_grad()
def test_a_step_over_some_rows_of_the_grid_gives_those_rows_outputs(
    arch, options, batch, tiny_config, tiny_model
):
    """A model with its memory once per sentence takes `Slots` (`takes_slots`): it computes any
    rows of its sentences x beams grid (a search leaves its finished hypotheses out), and those
    rows come out as when every row is computed. The plain RNN computes every row."""
    model = tiny_model(tiny_config(arch, **options))
    assert model.takes_slots == model.memory_per_sentence == (arch != "rnn")
    if not model.takes_slots:
        return
    memory, state = model.encode(batch.src, batch.src_lengths)
    state = model.select_state(state, torch.arange(4).repeat_interleave(2))  # G = 2 rows a sentence
    tokens = batch.tgt_in[:, :2].reshape(-1)  # (8,)
    features, new_state, attention = model.decode_features_with_attention(tokens, memory, state)
    places = torch.tensor([0, 3, 4, 7])  # rows 1, 2, 5, 6 left out
    grid = torch.tensor([0, 4, 4, 1, 2, 4, 4, 3])  # each place's row among the four, 4 for none
    some = model.decode_features_with_attention(
        tokens[places], memory, model.select_state(state, places), slots=Slots(grid, places)
    )
    torch.testing.assert_close(some[0], features[places], atol=1e-6, rtol=0)
    for key, value in some[1].items():
        torch.testing.assert_close(value, new_state[key][places], atol=1e-6, rtol=0)
    torch.testing.assert_close(some[2], attention[places], atol=1e-6, rtol=0)
