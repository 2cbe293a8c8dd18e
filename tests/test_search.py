"""Beam search behaviour on hand-made log-probabilities.

`ScriptedModel` offers the seam (`encode` / `decode_step`, the rest from `TensorSeam`); its
next-token distribution is a table keyed by (source id, prefix so far), so every test states
exactly what the model believes.
"""

import math

import numpy as np
import pytest
import torch

from nmt.config import SearchConfig
from nmt.models.step import TensorSeam
from nmt.search import BeamBatch, Hypothesis, _blocked_ngrams, beam_search, length_penalty
from nmt.specials import BOS_ID, EOS_ID

V = 10
A, B, C, D = 4, 5, 6, 7


class ScriptedModel(TensorSeam):
    """next-token probabilities from `table[src_id][prefix]`; unknown prefixes end the sentence."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def encode(self, src, src_lengths):
        rows = src.size(0)
        return {"src_id": src[:, 0].clone()}, {"prefix": torch.empty(rows, 0, dtype=torch.long)}

    def decode_step(self, prev, memory, state):
        self.calls += 1
        prefix = torch.cat([state["prefix"], prev[:, None]], dim=1)  # (R, t+1), BOS first
        log_probs = torch.full((prev.size(0), V), -math.inf)  # unlisted tokens are impossible
        for row in range(prev.size(0)):
            key = tuple(prefix[row, 1:].tolist())
            dist = self.table[memory["src_id"][row].item()].get(key, {EOS_ID: 1.0})
            for token, prob in dist.items():
                log_probs[row, token] = math.log(prob)
        return torch.log_softmax(log_probs, dim=-1), {"prefix": prefix}


def run(table, src_ids=(0,), **options):
    model = ScriptedModel(table)
    src = torch.tensor([[i, EOS_ID] for i in src_ids])
    opts = {"beam_size": 3, "length_penalty": 0.0, "max_len_a": 0.0, "max_len_b": 10, **options}
    return beam_search(model, src, torch.full((len(src_ids),), 2), SearchConfig(**opts)), model


def best_tokens(results):
    return [hyps[0].tokens for hyps in results]


# A then anything is unlikely; B then C is very likely: greedy takes A, beam search finds B C.
GARDEN_PATH = {
    0: {
        (): {A: 0.55, B: 0.45},
        (A,): {C: 0.3, D: 0.3, EOS_ID: 0.4},
        (A, C): {EOS_ID: 1.0},
        (A, D): {EOS_ID: 1.0},
        (B,): {C: 0.95, EOS_ID: 0.05},
        (B, C): {EOS_ID: 1.0},
    }
}


def test_greedy_takes_the_locally_best_token():
    results, _ = run(GARDEN_PATH, beam_size=1)
    assert best_tokens(results) == [[A]]


def test_beam_finds_the_sequence_greedy_misses():
    results, _ = run(GARDEN_PATH, beam_size=2)
    assert best_tokens(results) == [[B, C]]
    assert results[0][0].log_prob == pytest.approx(math.log(0.45 * 0.95), abs=1e-5)


def test_n_best_is_sorted_and_distinct():
    results, _ = run(GARDEN_PATH, beam_size=3, n_best=3)
    hyps = results[0]
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 3


def test_length_penalty_changes_the_winner():
    # short: A EOS has p = 0.5; long: B C C C EOS has p = 0.45 * 0.9^3 ~ 0.33
    table = {
        0: {
            (): {A: 0.5, B: 0.45, D: 0.05},
            (A,): {EOS_ID: 1.0},
            (B,): {C: 0.9, EOS_ID: 0.1},
            (B, C): {C: 0.9, EOS_ID: 0.1},
            (B, C, C): {C: 0.9, EOS_ID: 0.1},
            (B, C, C, C): {EOS_ID: 1.0},
        }
    }
    raw, _ = run(table, beam_size=3, length_penalty=0.0)
    assert best_tokens(raw) == [[A]]
    normalised, _ = run(table, beam_size=3, length_penalty=2.0)
    assert best_tokens(normalised) == [[B, C, C, C]]
    hyp = normalised[0][0]
    assert hyp.score == pytest.approx(hyp.log_prob / length_penalty(torch.tensor(5), 2.0).item(), rel=1e-5)


def test_finished_beams_stay_finished():
    # A EOS finishes at step 2; the search goes on for the longer beams, and A must neither
    # grow nor change its score while they do.
    table = {
        0: {
            (): {A: 0.6, B: 0.4},
            (A,): {EOS_ID: 1.0},
            (B,): {C: 1.0},
            (B, C): {C: 1.0},
            (B, C, C): {EOS_ID: 1.0},
        }
    }
    results, _ = run(table, beam_size=2, n_best=2)
    by_tokens = {tuple(h.tokens): h for h in results[0]}
    assert set(by_tokens) == {(A,), (B, C, C)}
    assert by_tokens[(A,)].log_prob == pytest.approx(math.log(0.6), abs=1e-5)


def test_search_stops_when_every_beam_has_finished():
    table = {0: {(): {A: 0.7, B: 0.3}, (A,): {EOS_ID: 1.0}, (B,): {EOS_ID: 1.0}}}
    _, model = run(table, beam_size=2, max_len_b=50)
    assert model.calls == 2  # first token, then EOS for both beams: no step more


def test_max_length_forces_eos():
    forever = {0: {(A,) * n: {A: 0.95, EOS_ID: 0.05} for n in range(100)}}
    results, _ = run(forever, beam_size=1, max_len_a=1.0, max_len_b=2)  # source length 2 -> 4
    assert results[0][0].tokens == [A, A, A]  # three tokens + EOS = the limit of 4


def test_no_repeat_ngram_blocks_repeats():
    loop = {0: {(): {A: 0.9, C: 0.1}}}
    loop[0].update(
        {
            tuple([A, B] * n + [A])[: k + 1]: {(B if k % 2 == 0 else A): 0.8, C: 0.1, EOS_ID: 0.1}
            for n in range(5)
            for k in range(8)
        }
    )
    free, _ = run(loop, beam_size=1, max_len_b=7)
    assert free[0][0].tokens[:4] == [A, B, A, B]
    blocked, _ = run(loop, beam_size=1, max_len_b=7, no_repeat_ngram=2)
    tokens = blocked[0][0].tokens
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    assert len(bigrams) == len(set(bigrams))


def test_blocked_ngrams_marks_the_completing_token():
    tokens = torch.tensor([[A, B, C, A], [A, A, A, A]])
    blocked = _blocked_ngrams(tokens, 2, V)
    assert blocked[0].nonzero().view(-1).tolist() == [B]  # "A B" was seen; last token is A
    assert blocked[1].nonzero().view(-1).tolist() == [A]


def test_batch_gives_the_same_results_as_one_at_a_time():
    table = {
        0: GARDEN_PATH[0],
        1: {(): {C: 0.9, D: 0.1}, (C,): {D: 0.6, EOS_ID: 0.4}, (C, D): {EOS_ID: 1.0}},
        2: {(): {EOS_ID: 0.9, A: 0.1}},
    }
    batched, _ = run(table, src_ids=(0, 1, 2), beam_size=3, n_best=2, length_penalty=0.6)
    for i in range(3):
        single, _ = run(table, src_ids=(i,), beam_size=3, n_best=2, length_penalty=0.6)
        assert [h.tokens for h in batched[i]] == [h.tokens for h in single[0]]
        assert [h.score for h in batched[i]] == pytest.approx([h.score for h in single[0]])


def test_finished_sentences_leave_the_batch():
    table = {0: {(): {EOS_ID: 1.0}}, 1: {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {EOS_ID: 1.0}}}
    beams = BeamBatch(torch.tensor([10, 10]), SearchConfig(beam_size=2, length_penalty=0.0))
    model = ScriptedModel(table)
    memory, state = model.encode(torch.tensor([[0, EOS_ID], [1, EOS_ID]]).repeat_interleave(2, 0), None)
    log_probs, _ = model.decode_step(beams.next_tokens(), memory, state)
    state_rows, memory_rows = beams.advance(log_probs)
    assert memory_rows is not None and memory_rows.tolist() == [2, 3]  # sentence 0 is done
    assert state_rows.numel() == 2
    assert beams.results[0][0] == Hypothesis([], pytest.approx(0.0, abs=1e-5), pytest.approx(0.0, abs=1e-5))
    assert not beams.done


class RowCounting(ScriptedModel):
    """Records the rows of every step."""

    def __init__(self, table):
        super().__init__(table)
        self.rows: list[int] = []

    def decode_step(self, prev, memory, state):
        self.rows.append(prev.size(0))
        return super().decode_step(prev, memory, state)


def test_a_model_with_cheap_selection_drops_each_decided_sentence_at_once():
    # three sentences: 0 ends at once, 1 and 2 go on; waiting for half the batch keeps sentence
    # 0's rows until a second sentence is decided, `cheap_select` drops them at the next step
    table = {
        0: {(): {EOS_ID: 1.0}},
        1: {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {EOS_ID: 1.0}},
        2: {(): {B: 0.6, C: 0.4}, (B,): {B: 1.0}, (C,): {C: 1.0}, (B, B): {B: 1.0}, (C, C): {EOS_ID: 1.0}},
    }
    found = {}
    for cheap in (False, True):
        model = RowCounting(table)
        model.cheap_select = cheap
        src = torch.tensor([[i, EOS_ID] for i in range(3)])
        options = SearchConfig(beam_size=2, n_best=2, length_penalty=0.0, max_len_a=0.0, max_len_b=10)
        results = beam_search(model, src, torch.full((3,), 2), options)
        found[cheap] = ([[h.tokens for h in hyps] for hyps in results], model.rows)
    assert found[True][0] == found[False][0]  # the same n-best lists
    assert found[False][1][:3] == [3, 6, 6] and found[True][1][:3] == [3, 4, 4]


def test_search_options_are_validated():
    from nmt.config import parse_section
    from nmt.errors import ConfigError

    with pytest.raises(ConfigError, match="n_best"):
        parse_section("search", {"beam_size": 2, "n_best": 3})
    with pytest.raises(ConfigError, match="beam_size"):
        parse_section("search", {"beam_size": 0})


def test_max_length_caps_the_length_rule():
    from nmt.search import max_lengths

    lengths = torch.tensor([2, 10, 40])
    options = SearchConfig(max_len_a=1.5, max_len_b=10, max_length=20)
    assert max_lengths(lengths, options).tolist() == [13, 21, 21]
    assert max_lengths(lengths, options, cap=16).tolist() == [13, 16, 16]
    assert max_lengths(lengths, SearchConfig(max_len_a=1.5, max_len_b=10)).tolist() == [13, 25, 70]


def test_a_decided_sentence_leaves_before_its_other_beams_finish():
    # A EOS (p 0.9) finishes at step 2; B C C ... (p 0.1) could only fall further, so A is the
    # answer and the search stops there instead of running B to the length limit
    forever = {0: {(): {A: 0.9, B: 0.1}, (A,): {EOS_ID: 1.0}}}
    forever[0].update({(B,) + (C,) * n: {C: 0.9, EOS_ID: 0.1} for n in range(60)})
    for alpha in (0.0, 0.6):
        results, model = run(forever, beam_size=2, max_len_b=50, length_penalty=alpha)
        assert best_tokens(results) == [[A]] and model.calls == 2
    # with two hypotheses wanted, the second must finish too
    results, model = run(forever, beam_size=2, n_best=2, max_len_b=8)
    assert [h.tokens for h in results[0]] == [[A], [B] + [C] * 6] and model.calls == 8


def test_the_first_step_runs_once_per_sentence():
    rows = []

    class Counting(ScriptedModel):
        def decode_step(self, prev, memory, state):
            rows.append(prev.size(0))
            return super().decode_step(prev, memory, state)

    src = torch.tensor([[0, EOS_ID], [0, EOS_ID]])
    options = SearchConfig(beam_size=3, length_penalty=0.0, max_len_a=0.0, max_len_b=10)
    results = beam_search(Counting(GARDEN_PATH | {1: GARDEN_PATH[0]}), src, torch.tensor([2, 2]), options)
    assert rows[0] == 2 and rows[1] == 6  # the sentences, then their beams
    assert best_tokens(results) == [[B, C], [B, C]]


def test_advance_top_k_takes_the_same_step_as_advance():
    """An engine's per-row k best (PAD and BOS excluded) and EOS log-probabilities give the same
    search as the full log-probabilities, finished rows and rows at their limit included."""
    generator = torch.Generator().manual_seed(0)
    options = SearchConfig(beam_size=3, length_penalty=0.6)
    full, top = (BeamBatch(torch.tensor([4, 9, 9]), options) for _ in range(2))
    for _ in range(9):
        if full.done:
            break
        rows = full.tokens.shape[0]
        log_probs = torch.randn(rows, V, generator=generator).mul(3).log_softmax(dim=-1)
        log_probs[:, EOS_ID] += 1.0  # let some beams finish early
        allowed = log_probs.clone()
        allowed[:, [0, 2]] = -math.inf  # PAD and BOS
        best, tokens = allowed.topk(3, dim=1)
        expected = full.advance(log_probs.clone())
        got = top.advance_top_k(best, tokens, log_probs[:, EOS_ID])
        for a, b in zip(expected, got, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        assert np.array_equal(full.tokens, top.tokens) and np.array_equal(full.finished, top.finished)
        assert np.allclose(full.scores, top.scores)
    assert full.results == top.results


class AttendingModel(ScriptedModel):
    """A scripted model whose attention marks the step's input: the weight on source position 0
    is the previous token's id, so a hypothesis's rows spell BOS, then its own tokens."""

    def decode_step_with_attention(self, prev, memory, state):
        log_probs, state = self.decode_step(prev, memory, state)
        attention = torch.zeros(prev.size(0), 2)
        attention[:, 0] = prev.float()
        return log_probs, state, attention


def test_each_hypothesis_carries_its_own_attention():
    """Through reordering, the first step's expansion to beams, finished sentences leaving the
    batch and n-best lists, every hypothesis's rows are those of its own steps, one per token
    and one for EOS."""
    table = {
        0: GARDEN_PATH[0],
        1: {(): {C: 0.9, D: 0.1}, (C,): {D: 0.6, EOS_ID: 0.4}, (C, D): {EOS_ID: 1.0}},
        2: {(): {EOS_ID: 0.9, A: 0.1}},
    }
    src = torch.tensor([[i, EOS_ID] for i in (0, 1, 2)])
    options = SearchConfig(beam_size=3, n_best=3, length_penalty=0.6, max_len_a=0.0, max_len_b=10)
    plain = beam_search(ScriptedModel(table), src, torch.full((3,), 2), options)
    attended = beam_search(AttendingModel(table), src, torch.full((3,), 2), options, attention=True)
    assert [[h.tokens for h in nbest] for nbest in attended] == [[h.tokens for h in nbest] for nbest in plain]
    for nbest in attended:
        for hypothesis in nbest:
            rows = len(hypothesis.tokens) + 1  # the tokens and EOS
            assert hypothesis.attention is not None and hypothesis.attention.shape == (rows, 2)
            assert hypothesis.attention[:, 0].long().tolist() == [BOS_ID, *hypothesis.tokens]
    assert all(h.attention is None for nbest in plain for h in nbest)


def test_a_batch_tracking_attention_needs_it_at_every_step():
    beams = BeamBatch(torch.tensor([5]), SearchConfig(beam_size=2), attention=True)
    with pytest.raises(ValueError, match="tracks attention"):
        beams.advance(torch.zeros(2, V).log_softmax(-1))
