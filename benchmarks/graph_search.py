"""The beam search's step inside the Transformer's decoder graph, against ours in Python: an
experiment (issue 15), tried and dropped.

What our search does in Python between two ONNX Runtime steps (`nmt.search.BeamBatch`: each
sentence's K best of the rows' candidates, lengths, finished flags, whether a sentence is
decided; the backend's rows to compute) runs here as 93 ONNX nodes appended to the decoder
graph of an export, so that a step's outputs feed the next step where they are, and Python only
reads a (B,) "decided" flag per step (sentences are retired by `BeamBatch` as before, on the
steps where one is decided). n-best 1, no attention, no n-gram blocking; the first step runs
through `BeamBatch` as usual. Both searches must give the same translations (ties between
candidates are ranked by ONNX Runtime's TopK here, by a stable sort in `BeamBatch`).

Each round translates the first N sentences of test_2016_flickr (beam 5, batch 32, 1 thread)
with both searches, in alternating order, in one process: CPU seconds in all and inside ONNX
Runtime's runs, medians. The target: the in-graph step at least as fast as ours.

    .venv/bin/python benchmarks/graph_search.py --model models/transformer-en-de --rounds 6
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto

import nmt.backends.onnx as onnx_backend
import nmt.translator as translator_module
from nmt.backends.onnx import OnnxModel, OrtTensors
from nmt.bundle import load_bundle
from nmt.config import SearchConfig
from nmt.data import read_lines
from nmt.export.onnx import export_onnx
from nmt.export.onnx_head import _Builder
from nmt.onnx_format import (
    BEAM_INDICES,
    DECODER_FILE,
    GRID_ROWS,
    MEMORY,
    NEW_STATE,
    OUTSIDE,
    OUTSIDE_LOG_WEIGHT,
    PREV_TOKENS,
    ROW_SLOTS,
    STATE,
    TOP_K_OUTPUTS,
    VOCABULARY,
    WANT_ATTENTION,
    WANT_LOG_PROBS,
    K,
)
from nmt.search import BeamBatch, Hypothesis, beam_search, max_lengths
from nmt.specials import EOS_ID
from nmt.translator import Translator

# the beam's inputs and outputs added to the decoder graph, with their types
BEAM_INPUTS = {
    "beam_scores": TensorProto.FLOAT,  # (B, K) total log-probabilities
    "beam_lengths": TensorProto.INT64,  # (B, K) EOS included
    "beam_finished": TensorProto.BOOL,  # (B, K)
    "beam_tokens": TensorProto.INT64,  # (R, t) the tokens so far
    "beam_step": TensorProto.INT64,  # () t
    "beam_limits": TensorProto.INT64,  # (R,) each row's longest target
    "beam_penalties": TensorProto.FLOAT,  # (L,) the length penalty of each length
    "beam_longest": TensorProto.FLOAT,  # (B,) each sentence's largest length penalty
}
CARRIED = {
    "scores": "beam_scores",
    "lengths": "beam_lengths",
    "finished": "beam_finished",
    "tokens": "beam_tokens",
}
BEAM_OUTPUTS = {
    "scores": TensorProto.FLOAT,
    "normalised": TensorProto.FLOAT,
    "lengths": TensorProto.INT64,
    "finished": TensorProto.BOOL,
    "tokens": TensorProto.INT64,
    "decided": TensorProto.BOOL,  # (B,)
    "parents": TensorProto.INT64,  # (R,) each new beam's place before the step
    "next_" + PREV_TOKENS: TensorProto.INT64,  # the next step's decoder inputs: unfinished rows only
    "next_" + BEAM_INDICES: TensorProto.INT64,
    "next_" + GRID_ROWS: TensorProto.INT64,
    "next_" + ROW_SLOTS: TensorProto.INT64,
}


class _BeamBuilder(_Builder):
    """The head's node builder, under "beam/" names."""

    def name(self, hint: str) -> str:
        self.count += 1
        return f"beam/{hint}_{self.count}"


def add_beam_step(model: onnx.ModelProto, beam: int) -> onnx.ModelProto:
    """The decoder graph of a Transformer export (rows R' of a grid of R = B * K places) followed
    by `BeamBatch.advance_top_k` and `BeamBatch._decided` for n-best 1, in ONNX nodes."""
    g = model.graph
    b = _BeamBuilder(g)
    one, f32 = b.ints(1), lambda hint, v: b.constant(hint, np.array(v, np.float32))
    minus_inf, flat, column = f32("minus_inf", -np.inf), b.ints(-1), b.ints(-1, 1)
    # the computed rows' outputs at their places, a zero row where none was computed
    top, tokens, eos = (
        b.one("Gather", [b.one("Concat", [name, pad], axis=0), GRID_ROWS], axis=0)
        for name, pad in zip(
            TOP_K_OUTPUTS,
            (
                f32("zero_rows", np.zeros((1, beam))),
                b.constant("zero_ids", np.zeros((1, beam), np.int64)),
                f32("zero", [0.0]),
            ),
            strict=True,
        )
    )
    finished = b.one("Reshape", ["beam_finished", flat])  # (R,)
    step1 = b.one("Add", ["beam_step", one])
    only_eos = b.one("Or", [finished, b.one("LessOrEqual", ["beam_limits", step1])])
    only_eos_c = b.one("Unsqueeze", [only_eos, one])  # (R, 1)
    eos_best = b.one("Unsqueeze", [b.one("Where", [finished, f32("zero0", 0.0), eos]), one])
    first = b.one("Where", [only_eos_c, eos_best, b.one("Slice", [top, b.ints(0), one, one])])
    rest = b.one("Where", [only_eos_c, minus_inf, b.one("Slice", [top, one, b.ints(1 << 40), one])])
    best = b.one("Concat", [first, rest], axis=1)  # (R, K)
    tokens = b.one("Where", [only_eos_c, b.ints(EOS_ID), tokens])
    candidates = b.one("Add", [b.one("Reshape", ["beam_scores", column]), best])  # (R, K)
    lengths = b.one("Reshape", [b.one("Where", ["beam_finished", "beam_lengths", step1]), column])
    ranked = b.one("Div", [candidates, b.one("Gather", ["beam_penalties", lengths], axis=0)])
    ranked = b.one("Reshape", [ranked, b.ints(-1, beam * beam)])  # (B, K * K)
    normalised, places = b.node("TopK", [ranked, b.ints(beam)], 2, axis=1)  # (B, K)
    sentences = b.one("Squeeze", [b.one("Slice", [b.one("Shape", [ranked]), b.ints(0), one, b.ints(0)])])
    scalar = lambda hint, v: b.constant(hint, np.array(v, np.int64))  # noqa: E731
    sentence_ids = b.one("Range", [scalar("start", 0), sentences, scalar("delta", 1)])  # (B,)
    offsets = b.one("Mul", [sentence_ids, b.ints(beam * beam)])
    chosen = b.one("Reshape", [b.one("Add", [places, b.one("Unsqueeze", [offsets, one])]), flat])  # (R,)
    parents = b.one("Div", [chosen, b.ints(beam)])
    scores = b.one("Gather", [b.one("Reshape", [candidates, flat]), chosen], axis=0)
    last = b.one("Gather", [b.one("Reshape", [tokens, flat]), chosen], axis=0)
    was_finished = b.one("Gather", [finished, parents], axis=0)
    new_lengths = b.one(
        "Where",
        [was_finished, b.one("Gather", [b.one("Reshape", ["beam_lengths", flat]), parents], axis=0), step1],
    )
    infinite = b.one("Or", [b.one("IsInf", [scores]), b.one("IsNaN", [scores])])
    ended = b.one("Or", [b.one("Or", [was_finished, b.one("Equal", [last, b.ints(EOS_ID)])]), infinite])
    history = b.one(
        "Concat", [b.one("Gather", ["beam_tokens", parents], axis=0), b.one("Unsqueeze", [last, one])], axis=1
    )
    by_sentence = b.ints(-1, beam)
    ended_bk, scores_bk = b.one("Reshape", [ended, by_sentence]), b.one("Reshape", [scores, by_sentence])
    best_finished = b.one(
        "ReduceMax", [b.one("Where", [ended_bk, normalised, minus_inf])], axes=[1], keepdims=0
    )
    shortest = b.one("Gather", ["beam_penalties", b.one("Add", ["beam_step", b.ints(2)])], axis=0)
    reachable = b.one(
        "Div",
        [
            b.one("ReduceMax", [b.one("Where", [ended_bk, minus_inf, scores_bk])], axes=[1], keepdims=0),
            b.one("Max", ["beam_longest", shortest]),
        ],
    )
    any_open = b.one(
        "ReduceMax", [b.one("Cast", [b.one("Not", [ended_bk])], to=TensorProto.INT32)], axes=[1], keepdims=0
    )
    decided = b.one(
        "Or",
        [
            b.one("Equal", [any_open, b.constant("none", np.array(0, np.int32))]),
            b.one("GreaterOrEqual", [best_finished, reachable]),
        ],
    )
    # the next step computes the unfinished rows: their places, grid, tokens and state rows
    open_rows = b.one("Not", [ended])
    computed = b.one("Reshape", [b.one("NonZero", [open_rows]), flat])  # (R'',)
    count = b.one("Reshape", [b.one("Size", [computed]), flat])
    ranks = b.one(
        "Sub", [b.one("CumSum", [b.one("Cast", [open_rows], to=TensorProto.INT64), scalar("axis", 0)]), one]
    )
    outputs = {
        "scores": scores_bk,
        "normalised": normalised,
        "lengths": b.one("Reshape", [new_lengths, by_sentence]),
        "finished": ended_bk,
        "tokens": history,
        "decided": decided,
        "parents": parents,
        "next_" + PREV_TOKENS: b.one("Gather", [last, computed], axis=0),
        # a parent's row in this step's new state: its place's row in this step's grid
        "next_" + BEAM_INDICES: b.one(
            "Gather", [GRID_ROWS, b.one("Gather", [parents, computed], axis=0)], axis=0
        ),
        "next_" + GRID_ROWS: b.one("Where", [open_rows, ranks, count]),
        "next_" + ROW_SLOTS: computed,
    }
    for name, source in outputs.items():
        b.node("Identity", [source], ["beam." + name])
    g.input.extend(onnx.helper.make_tensor_value_info(n, t, None) for n, t in BEAM_INPUTS.items())
    g.output.extend(onnx.helper.make_tensor_value_info("beam." + n, t, None) for n, t in BEAM_OUTPUTS.items())
    return model


class GraphSearch:
    """`nmt.search.beam_search` for n-best 1 over an `OnnxModel` of a Transformer export, its
    steps after the first run by the decoder graph with the beam step (`add_beam_step`)."""

    def __init__(self, model: OnnxModel, beam: int) -> None:
        self.model = model
        graph = add_beam_step(onnx.load(str(model.folder / DECODER_FILE)), beam)
        self.session = ort.InferenceSession(
            graph.SerializeToString(), onnx_backend.session_options(1), providers=model.providers
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.fetch = [*TOP_K_OUTPUTS, *(NEW_STATE + key for key in model.state_keys)]
        self.fetch += ["beam." + name for name in BEAM_OUTPUTS]

    def search(
        self, src: torch.Tensor, src_lengths: torch.Tensor, options: SearchConfig, cap: int | None
    ) -> list[list[Hypothesis]]:
        model, beam = self.model, options.beam_size
        memory, state = model.encode(src, src_lengths)
        beams = BeamBatch(max_lengths(src_lengths, options, cap), options, False, True, True)
        # the first step as `beam_search` runs it: once per sentence, repeated for the beams
        best, tokens, eos, state = model.decode_top_k(beams.next_tokens(beam), memory, state, beam)
        best, tokens, eos = (t.repeat_interleave(beam, dim=0) for t in (best, tokens, eos))
        state_rows, memory_rows = beams.advance_top_k(best, tokens, eos)
        state = model.select_state(state, torch.div(state_rows, beam, rounding_mode="floor"))
        memory = model._values(memory)
        if memory_rows is not None:
            memory = model.select_memory(memory, torch.div(memory_rows[::beam], beam, rounding_mode="floor"))
        if beams.done:  # every sentence decided at its first step
            return beams.results
        value = model._value
        fixed = {
            K: model._scalar(np.int64(beam)),
            WANT_LOG_PROBS: model._scalar(np.bool_(False)),
            WANT_ATTENTION: model._scalar(np.bool_(False)),
            VOCABULARY: model._vocabulary,
            OUTSIDE: model._outside[0],
            OUTSIDE_LOG_WEIGHT: model._outside[1],
            "beam_penalties": value(beams.penalties.astype(np.float32)),
        }

        def from_beams(state: OrtTensors) -> dict[str, ort.OrtValue]:
            """The beam's and the step's inputs from `beams` and the state's pending rows."""
            rows = state.rows.numpy() if state.rows is not None else np.arange(state.stored)
            computed = np.flatnonzero(rows >= 0)
            grid = np.full(rows.size, computed.size)
            grid[computed] = np.arange(computed.size)
            return {
                "beam_scores": value(beams.scores),
                "beam_lengths": value(beams.lengths),
                "beam_finished": value(beams.finished),
                "beam_tokens": value(beams.tokens),
                "beam_limits": value(beams.row_max_lens),
                "beam_longest": value(beams.longest.astype(np.float32)),
                PREV_TOKENS: value(beams.last_tokens[computed]),
                BEAM_INDICES: value(rows[computed]),
                GRID_ROWS: value(grid),
                ROW_SLOTS: value(computed),
            }

        carried = from_beams(state)
        step = beams.tokens.shape[1]
        while True:
            inputs = {**fixed, **carried, "beam_step": model._scalar(np.int64(step))}
            inputs.update((MEMORY + key, v) for key, v in memory.ort_values.items())
            inputs.update((STATE + key, v) for key, v in state.ort_values.items())
            binding = self.session.io_binding()
            for name, v in inputs.items():
                if name in self.inputs:
                    binding.bind_ortvalue_input(name, v)
            for name in self.fetch:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            got = dict(zip(self.fetch, binding.get_outputs(), strict=True))
            state = OrtTensors({key: got[NEW_STATE + key] for key in model.state_keys})
            step += 1
            if not got["beam.decided"].numpy().any():
                carried = {
                    **{CARRIED[name]: got["beam." + name] for name in CARRIED},
                    "beam_limits": carried["beam_limits"],
                    "beam_longest": carried["beam_longest"],
                    **{
                        name: got["beam.next_" + name]
                        for name in (PREV_TOKENS, BEAM_INDICES, GRID_ROWS, ROW_SLOTS)
                    },
                }
                continue
            # a sentence is decided: `BeamBatch` retires it, from the graph's beams
            beams.scores, beams.normalised = got["beam.scores"].numpy(), got["beam.normalised"].numpy()
            beams.lengths, beams.finished = got["beam.lengths"].numpy(), got["beam.finished"].numpy()
            beams.tokens = got["beam.tokens"].numpy()
            beams.last_tokens = beams.tokens[:, -1].copy()
            # each new beam's state row: its parent's row in the new state (the step computed the
            # rows of its grid's places, in order), -1 where finished
            own = inputs[GRID_ROWS].numpy()[got["beam.parents"].numpy()]
            own = np.where(own < state.stored, own, -1)
            state_rows, memory_rows = beams._retire(np.arange(own.size))
            kept = state_rows.numpy()
            state.rows = torch.from_numpy(np.where(kept >= 0, own[np.maximum(kept, 0)], -1))
            if memory_rows is not None:
                memory = model.select_memory(
                    memory, torch.div(memory_rows[::beam], beam, rounding_mode="floor")
                )
            if beams.done:
                return beams.results
            carried = from_beams(state)


def _timed_runs(spent: list[float]):
    """ONNX Runtime's `run_with_iobinding`, adding its CPU seconds to spent[0]."""
    plain = ort.InferenceSession.run_with_iobinding

    def timed(self, *args):
        start = time.process_time()
        try:
            return plain(self, *args)
        finally:
            spent[0] += time.process_time() - start

    return plain, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="models/transformer-en-de",
        help="a Transformer or attention-RNN bundle (default: %(default)s)",
    )
    parser.add_argument(
        "--data", type=Path, default=harness.DEFAULT_DATA, help="folder with test_2016_flickr.<src>.gz"
    )
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    harness.set_threads(1)
    bundle = load_bundle(args.model)
    texts = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, bundle.src_lang))[: args.sentences]
    with tempfile.TemporaryDirectory(prefix="bench-graph-search-") as tmp:
        copy = load_bundle(
            shutil.copytree(bundle.path, Path(tmp) / "bundle", ignore=shutil.ignore_patterns("onnx", "ct2"))
        )
        export_onnx(copy)
        translator = Translator.from_bundle(copy, "cpu", "onnx", batch_size=32)
        if not translator.model.skips_finished:
            raise SystemExit(
                f"{args.model}: a bundle whose decoder computes any rows of its grid only (the Transformer, the attention RNNs)"
            )
        search = copy.search.model_copy(update={"beam_size": 5, "n_best": 1})
        graph = GraphSearch(translator.model, search.beam_size)

        def in_graph(model, src, src_lengths, options, cap=None, attention=False, vocabulary=None, outside=0):
            return graph.search(src, src_lengths, options, cap)

        searches = {"ours (Python)": beam_search, "in the decoder graph": in_graph}
        outputs, totals, inside = {}, {name: [] for name in searches}, {name: [] for name in searches}
        spent = [0.0]
        plain, timed = _timed_runs(spent)
        ort.InferenceSession.run_with_iobinding = timed
        try:
            for round_ in range(args.rounds + 1):  # the first round warms up, uncounted
                order = list(searches) if round_ % 2 == 0 else list(reversed(searches))
                for name in order:
                    translator_module.beam_search = searches[name]
                    spent[0], start = 0.0, time.process_time()
                    outputs[name] = translator.translate_best(texts, search)
                    if round_:
                        totals[name].append(time.process_time() - start)
                        inside[name].append(spent[0])
        finally:
            ort.InferenceSession.run_with_iobinding = plain
            translator_module.beam_search = beam_search
    ours, graphed = (harness.median(totals[name]) for name in searches)
    same = sum(a == b for a, b in zip(*outputs.values(), strict=True))
    print(
        f"{bundle.name}, {len(texts)} sentences of test_2016_flickr, beam 5, batch 32, 1 thread, "
        f"{args.rounds} rounds (CPU seconds, medians):"
    )
    rows = [
        [
            name,
            f"{harness.median(totals[name]):.3f}",
            f"{harness.median(inside[name]):.3f}",
            f"{harness.median([t - i for t, i in zip(totals[name], inside[name], strict=True)]):.3f}",
            " ".join(f"{t:.2f}" for t in totals[name]),
        ]
        for name in searches
    ]
    harness.print_table(["search", "in all", "in ONNX Runtime's runs", "outside them", "rounds"], rows)
    print(f"the same translations: {same} of {len(texts)}")
    harness.verdict(
        f"the search's step in the decoder graph >= 1.0x ours, the same translations ({ours / graphed:.2f}x)",
        ours / graphed >= 1.0 and same == len(texts),
    )


if __name__ == "__main__":
    main()
