"""ONNX Runtime on the CPU, one operator form against another at the decoder step's shapes: what
the export's choices rest on (issue 15), each pair checked to compute the same values.

- the normaliser of the output head (`nmt/export/onnx_head.py`): ReduceLogSumExp against
  ReduceMax, Sub, Exp, ReduceSum, Log, Add, over (R, 259) (a shortlist's 256 ids sampled
  outside it and three other terms per row) and (R, 3) (no sample);
- a shortlist's output layer: its weight rows gathered at every step then the product, against
  the rows given as an input (gathered once per batch), in either operand order;
- an LSTM step: ONNX's LSTM operator (what the recurrent decoders exported to until session 18)
  against one Gemm for the gates and the cell's element-wise nodes, and against the form they
  export to now: the input product of each token gathered from a table made once, one Gemm for
  the hidden state, the cell's nodes.

Microseconds per run (the fastest of 3 rounds of 300 runs), 1 intra-op thread, R = 160 rows
(32 sentences x 5 beams). Diagnostic rows; the target: the head's five nodes faster than
ReduceLogSumExp at (160, 259).

    .venv/bin/python benchmarks/onnx_ops.py
"""

from __future__ import annotations

import argparse
import time

import harness
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def _session(nodes, inputs: dict[str, int], initializers: dict[str, np.ndarray]) -> ort.InferenceSession:
    graph = helper.make_graph(
        nodes,
        "ops",
        [helper.make_tensor_value_info(name, kind, None) for name, kind in inputs.items()],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _microseconds(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    for _ in range(20):
        session.run(None, feed)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        best = min(best, (time.perf_counter() - start) / runs * 1e6)
    return best


def normaliser_forms(rows: int, terms: int) -> dict[str, tuple]:
    node = helper.make_node
    x = np.random.default_rng(0).standard_normal((rows, terms)).astype(np.float32) * 3
    x[:, 1] = -np.inf  # a masked logit, as PAD's
    reduce = [node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=1)]
    five = [
        node("ReduceMax", ["x"], ["peak"], axes=[1], keepdims=1),
        node("Sub", ["x", "peak"], ["shifted"]),
        node("Exp", ["shifted"], ["e"]),
        node("ReduceSum", ["e", "axis"], ["total"], keepdims=1),
        node("Log", ["total"], ["log_total"]),
        node("Add", ["peak", "log_total"], ["y"]),
    ]
    axis = {"axis": np.array([1], np.int64)}
    return {
        f"log sum exp ({rows}, {terms}): ReduceLogSumExp": (_session(reduce, {"x": FLOAT}, {}), {"x": x}),
        f"log sum exp ({rows}, {terms}): the head's 5 nodes": (_session(five, {"x": FLOAT}, axis), {"x": x}),
    }


def shortlist_forms(rows: int, width: int, vocab: int, kept: int) -> dict[str, tuple]:
    node = helper.make_node
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((vocab, width)) * 0.05).astype(np.float32)
    ids = np.sort(rng.choice(vocab, kept, replace=False)).astype(np.int64)
    x = rng.standard_normal((rows, width)).astype(np.float32)
    gathered = np.ascontiguousarray(weight[ids])
    label = f"shortlist ({rows}, {width}) x ({kept} of {vocab})"
    every_step = [
        node("Gather", ["w", "ids"], ["rows_w"], axis=0),
        node("Gemm", ["x", "rows_w"], ["y"], transB=1),
    ]
    given = [node("Gemm", ["x", "rows_w"], ["y"], transB=1)]
    given_first = [
        node("Gemm", ["rows_w", "x"], ["y_t"], transB=1),
        node("Transpose", ["y_t"], ["y"], perm=[1, 0]),
    ]
    as_input = {"x": FLOAT, "rows_w": FLOAT}
    feed = {"x": x, "rows_w": gathered}
    return {
        f"{label}: rows gathered every step, x W'^T": (
            _session(every_step, {"x": FLOAT, "ids": TensorProto.INT64}, {"w": weight}),
            {"x": x, "ids": ids},
        ),
        f"{label}: rows given, x W'^T": (_session(given, as_input, {}), feed),
        f"{label}: rows given, (W' x^T)^T": (_session(given_first, as_input, {}), feed),
    }


def lstm_forms(rows: int, size: int, vocab: int = 8000) -> dict[str, tuple]:
    """An LSTM decoder step from the previous tokens (an embedding gather first, as in the graph)."""
    node = helper.make_node
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1, 4 * size, size)) * 0.05).astype(np.float32)  # gates i, o, f, c
    r = (rng.standard_normal((1, 4 * size, size)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal((1, 8 * size)) * 0.05).astype(np.float32)
    embedding = (rng.standard_normal((vocab, size)) * 0.1).astype(np.float32)
    feed = {name: rng.standard_normal((rows, size)).astype(np.float32) for name in ("h", "c")}
    feed["ids"] = rng.integers(0, vocab, rows).astype(np.int64)
    zero = {"zero": np.array([0], np.int64)}
    operator = [
        node("Gather", ["embedding", "ids"], ["x"]),
        *(node("Unsqueeze", [name, "zero"], [name + "3"]) for name in ("x", "h", "c")),
        node("LSTM", ["x3", "w", "r", "b", "", "h3", "c3"], ["", "h_out", "c_out"], hidden_size=size),
        node("Squeeze", ["h_out", "zero"], ["h1"]),
        node("Squeeze", ["c_out", "zero"], ["c1"]),
        node("Concat", ["h1", "c1"], ["y"], axis=1),
    ]
    cell = [
        node("Split", ["g", "split"], ["gi", "go", "gf", "gc"], axis=1),
        node("Sigmoid", ["gi"], ["si"]),
        node("Sigmoid", ["go"], ["so"]),
        node("Sigmoid", ["gf"], ["sf"]),
        node("Tanh", ["gc"], ["tc"]),
        node("Mul", ["sf", "c"], ["kept"]),
        node("Mul", ["si", "tc"], ["new"]),
        node("Add", ["kept", "new"], ["c1"]),
        node("Tanh", ["c1"], ["tc1"]),
        node("Mul", ["so", "tc1"], ["h1"]),
        node("Concat", ["h1", "c1"], ["y"], axis=1),
    ]
    stacked = np.ascontiguousarray(np.concatenate([w[0], r[0]], 1).T)  # (2 size, 4 size)
    gates = [
        node("Gather", ["embedding", "ids"], ["x"]),
        node("Concat", ["x", "h"], ["xh"], axis=1),
        node("Gemm", ["xh", "stacked", "gate_bias"], ["g"]),
        *cell,
    ]
    # the input product of every token made once (`nmt.models.cells.TokenGates`): a gather of rows
    table = [
        node("Gather", ["table", "ids"], ["gx"]),
        node("Gemm", ["h", "recurrent", "gx"], ["g"]),
        *cell,
    ]
    inputs = {"ids": TensorProto.INT64, "h": FLOAT, "c": FLOAT}
    gate_bias = bias[0, : 4 * size] + bias[0, 4 * size :]
    split = np.array([size] * 4, np.int64)
    explicit = {"embedding": embedding, "stacked": stacked, "gate_bias": gate_bias, "split": split}
    tabled = {
        "table": (embedding @ w[0].T + gate_bias).astype(np.float32),  # (vocab, 4 size)
        "recurrent": np.ascontiguousarray(r[0].T),
        "split": split,
    }
    label = f"LSTM step ({rows}, {size})"
    return {
        f"{label}: the LSTM operator": (
            _session(operator, inputs, {"w": w, "r": r, "b": bias, "embedding": embedding, **zero}),
            feed,
        ),
        f"{label}: one Gemm for the gates + the cell's nodes": (_session(gates, inputs, explicit), feed),
        f"{label}: a per-token table's rows + a Gemm for h + the cell's nodes": (
            _session(table, inputs, tabled),
            feed,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=160, help="rows per step (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=300, help="runs per round (default: %(default)s)")
    args = parser.parse_args()
    groups = [
        normaliser_forms(args.rows, 259),
        normaliser_forms(args.rows, 3),
        shortlist_forms(args.rows, 256, 8000, 1536),
        lstm_forms(args.rows, 256),
    ]
    table, times = [], {}
    for forms in groups:
        results = {name: session.run(None, feed)[0] for name, (session, feed) in forms.items()}
        first = next(iter(results.values()))
        for name, (session, feed) in forms.items():
            times[name] = _microseconds(session, feed, args.runs)
            difference = float(np.abs(results[name] - first).max())
            table.append([name, f"{times[name]:.0f}", f"{difference:.1e}"])
    harness.print_table(["operator form", "us per run", "max difference from the first"], table)
    reduce, five = (
        times[f"log sum exp ({args.rows}, 259): {form}"] for form in ("ReduceLogSumExp", "the head's 5 nodes")
    )
    harness.verdict(
        f"the head's normaliser as 5 nodes faster than ReduceLogSumExp at ({args.rows}, 259) ({reduce / five:.1f}x)",
        five < reduce,
    )


if __name__ == "__main__":
    main()
