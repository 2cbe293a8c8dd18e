"""The decoder graph's output head, written in ONNX: from the output layer's input to what the
beam search reads.

    features (R, E), k () int64, want_log_probs () bool
    -> top_log_probs (R, k), top_tokens (R, k): each row's k best continuations, PAD and BOS
       excluded, best first;
       eos_log_probs (R,);
       log_probs (R, V) when want_log_probs, else (0, V) (the full log-probabilities, which
       `decode_step` and n-gram blocking need and the ranking does not)

It does what `log_softmax(features @ W.T + b)` followed by a top-k over V does, with fewer passes
over the (R, V) logits, which at V = 8000 and a batch of 32 x 5 beams are 5 MB, more than the
core's L2 cache; in the shipped Transformer, LogSoftmax and a TopK over them took 23% of the
graph's kernel time:
- PAD and BOS are masked by the output layer's bias (-inf there), so no pass masks them, and
  their logits are computed apart (a (R, 2) product) for the normaliser;
- the top k come from blocks: the V logits viewed as (V / b) blocks of b, each block's maximum
  (one streaming pass), the k blocks with the largest maxima (they hold the k best logits: each
  of the k best is at most its block's maximum, so at most k blocks have a maximum that high),
  then a top-k over those k * b candidates;
- the normaliser log sum exp(logits) comes from a Softmax (ONNX Runtime's fastest exp pass):
  the best logit's probability is exp(0) / sum, so log sum = max - log p(best); the two logits
  computed apart are added in by a log-sum-exp over three values per row;
- the full log-probabilities sit in an If branch that runs only when asked for (ONNX Runtime
  runs every node of a graph, fetched or not); it reads no initializer of the outer graph
  (ONNX Runtime's optimizer, run by the int8 quantization's pre-processing, transposed the
  Transformer's tied embedding in place when the branch read it, breaking the lookup).
Ties between equal logits in different blocks may rank in another order than a plain top-k.

With a vocabulary input (a shortlist, `nmt.shortlist`), the same head runs over the rows it
names (see `add_head`); given empty, over all of them, at the plain head's cost.

Letters: R rows, E the output layer's input size, V vocabulary, b block size.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nmt.onnx_format import LOG_PROBS, TOP_K_OUTPUTS
from nmt.specials import EOS_ID

BLOCK = 64  # logits per block: 8000 / 64 = 125 blocks
PREFIX = "head/"


def _block_size(vocab_size: int, k_max: int = 32) -> int | None:
    """The largest power of two <= BLOCK dividing V into more than k_max blocks; None if there is none."""
    size = BLOCK
    while size >= 8:
        if vocab_size % size == 0 and vocab_size // size > k_max:
            return size
        size //= 2
    return None


class _Builder:
    """Appends nodes and constants to a graph under fresh "head/" names."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{PREFIX}{hint}_{self.count}"

    def constant(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, *values: int) -> str:
        return self.constant("ints", np.array(values, dtype=np.int64))

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)] if isinstance(outputs, int) else outputs
        self.graph.node.append(helper.make_node(op, inputs, names, name=self.name(op), **attrs))
        return names

    def one(self, op: str, inputs: list[str], **attrs) -> str:
        return self.node(op, inputs, **attrs)[0]


def _weight_name(graph: onnx.GraphProto, weight: np.ndarray, b: _Builder) -> str:
    """The initializer holding `weight` already (a tied embedding), else a new one."""
    for init in graph.initializer:
        same_shape = tuple(init.dims) == weight.shape and init.data_type == TensorProto.FLOAT
        if same_shape and np.array_equal(numpy_helper.to_array(init), weight):
            return init.name
    return b.constant("output_weight", weight)


def add_head(
    graph: onnx.GraphProto,
    features: str,
    k: str,
    want_log_probs: str,
    weight: np.ndarray,
    bias: np.ndarray | None,
    banned: tuple[int, ...],
    vocabulary: str | None = None,
    outside: tuple[str, str] | None = None,
) -> None:
    """Append the head to `graph`, reading the tensors named `features` (R, E), `k` () int64 and
    `want_log_probs` () bool; the output layer is `features @ weight.T + bias` (weight (V, E),
    bias (V,) or None), never producing the tokens `banned` (the search's `BANNED_IDS`, PAD and
    BOS: N of them). The results are named `LOG_PROBS`, then `TOP_K_OUTPUTS`:
    "top_log_probs", "top_tokens", "eos_log_probs".

    With `vocabulary`, the name of an input (V',) int64: a shortlist (`nmt.shortlist`), the
    sorted target ids to compute the output layer over, which start with the special ids (so
    EOS and the banned ids keep their positions) and whose length is a multiple of the block
    size; the logits are then those rows' (weight and bias rows gathered), normalised over them,
    and the tokens returned are ids (positions mapped back). Empty, it means the full vocabulary,
    computed as without it (an If: gathering all V rows at every step would cost more). With it,
    `outside`: the names of the inputs (M,) int64 and () float32 of `nmt.search.outside_sample`,
    ids outside the vocabulary whose logits, each counted exp(log weight) times, join the
    normaliser ([PAD] with any weight adds nothing: its masked logit is -inf)."""
    top_log_probs, top_tokens_out, eos_log_probs = TOP_K_OUTPUTS
    b = _Builder(graph)
    vocab_size = weight.shape[0]
    weight = weight.astype(np.float32)
    bias = np.zeros(vocab_size, np.float32) if bias is None else bias.astype(np.float32)
    w = _weight_name(graph, weight, b)
    masked_bias = bias.copy()
    masked_bias[list(banned)] = -np.inf
    masked = b.constant("masked_bias", masked_bias)
    if vocabulary is None:
        logits = b.one("Gemm", [features, w, masked], transB=1)  # (R, V)
        ids = None
    else:
        logits, ids = _shortlisted_logits(b, features, w, masked, vocabulary, vocab_size)  # (R, V')
    specials = b.one(  # (R, N): the banned tokens' logits, masked above
        "Gemm",
        [
            features,
            b.constant("special_weight", weight[list(banned)]),
            b.constant("special_bias", bias[list(banned)]),
        ],
        transB=1,
    )

    k1 = b.one("Reshape", [k, b.ints(1)])  # (1,): TopK's k
    block = _block_size(vocab_size)
    if block is None:
        top_logits, top_tokens = b.node("TopK", [logits, k1], 2, axis=-1)
    else:
        grouped = b.one("Reshape", [logits, b.ints(0, -1, block)])  # (R, V / b, b)
        maxima = b.one("ReduceMax", [grouped], axes=[-1], keepdims=0)  # (R, V / b)
        blocks = b.one("Slice", [b.one("Shape", [maxima]), b.ints(1), b.ints(2), b.ints(0)])  # (1,)
        k_blocks = b.one("Min", [k1, blocks])
        _, best_blocks = b.node("TopK", [maxima, k_blocks], 2, axis=-1)  # (R, kb)
        index = b.one("Expand", [b.one("Unsqueeze", [best_blocks, b.ints(2)]), b.ints(1, 1, block)])
        candidates = b.one("GatherElements", [grouped, index], axis=1)  # (R, kb, b)
        flat = b.one("Reshape", [candidates, b.ints(0, -1)])  # (R, kb * b)
        top_logits, position = b.node("TopK", [flat, k1], 2, axis=-1)  # (R, k)
        size = b.ints(block)
        chosen = b.one("GatherElements", [best_blocks, b.one("Div", [position, size])], axis=1)
        top_tokens = b.one("Add", [b.one("Mul", [chosen, size]), b.one("Mod", [position, size])])

    # the normaliser: log sum exp over the kept logits, then with the banned logits added in
    first = [b.ints(0), b.ints(1), b.ints(1)]  # Slice starts, ends, axes: column 0
    best_logit = b.one("Slice", [top_logits, *first])  # (R, 1)
    probs = b.one("Softmax", [logits], axis=-1)
    best_prob = b.one("GatherElements", [probs, b.one("Slice", [top_tokens, *first])], axis=1)
    kept = b.one("Sub", [best_logit, b.one("Log", [best_prob])])  # (R, 1)
    terms = [kept, specials]
    if outside is not None:  # (R, M): the sampled logits outside the vocabulary, weighted
        rows, log_weight = outside
        outside_bias = b.one("Add", [b.one("Gather", [masked, rows], axis=0), log_weight])  # (M,)
        outside_weight = b.one("Gather", [w, rows], axis=0)  # (M, E)
        terms.append(b.one("Gemm", [features, outside_weight, outside_bias], transB=1))
    normaliser = _log_sum_exp(b, b.one("Concat", terms, axis=1))  # (R, 1)

    b.node("Sub", [top_logits, normaliser], [top_log_probs])
    if ids is None:
        b.node("Identity", [top_tokens], [top_tokens_out])
    else:
        b.node("Gather", [ids, top_tokens], [top_tokens_out], axis=0)  # positions -> vocabulary ids
    eos = b.one("Gather", [logits, b.ints(EOS_ID)], axis=1)  # (R, 1)
    b.node("Squeeze", [b.one("Sub", [eos, normaliser]), b.ints(1)], [eos_log_probs])

    # the full log-probabilities: the banned logits put back, minus the normaliser (with a
    # shortlist, scattered into (R, V), -inf outside it)
    special_columns = b.constant("special_columns", np.array([banned], np.int64))  # (1, N)
    nodes = [
        helper.make_node("Shape", [specials], ["special_shape"]),
        helper.make_node("Expand", [special_columns, "special_shape"], ["special_index"]),  # (R, N)
        helper.make_node("ScatterElements", [logits, "special_index", specials], ["full_logits"], axis=1),
    ]
    if ids is None:
        nodes.append(helper.make_node("Sub", ["full_logits", normaliser], ["full_log_probs"]))
    else:
        nodes += [
            helper.make_node("Sub", ["full_logits", normaliser], ["subset_log_probs"]),
            helper.make_node("Shape", ["subset_log_probs"], ["subset_shape"]),
            helper.make_node("Expand", [ids, "subset_shape"], ["subset_index"]),  # (R, V')
            helper.make_node(
                "Constant",
                [],
                ["vocab_size"],
                value=numpy_helper.from_array(np.array([vocab_size], np.int64)),
            ),
            helper.make_node("Split", ["subset_shape"], ["row_count", "column_count"], axis=0),
            helper.make_node("Concat", ["row_count", "vocab_size"], ["full_shape"], axis=0),
            helper.make_node(
                "ConstantOfShape",
                ["full_shape"],
                ["minus_inf"],
                value=numpy_helper.from_array(np.array([-np.inf], np.float32)),
            ),
            helper.make_node(
                "ScatterElements",
                ["minus_inf", "subset_index", "subset_log_probs"],
                ["full_log_probs"],
                axis=1,
            ),
        ]
    full = helper.make_graph(
        nodes,
        "full_log_probs",
        [],
        [helper.make_tensor_value_info("full_log_probs", TensorProto.FLOAT, [None, vocab_size])],
    )
    empty = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["no_log_probs"],
                value=numpy_helper.from_array(np.zeros((0, vocab_size), np.float32)),
            )
        ],
        "no_log_probs",
        [],
        [helper.make_tensor_value_info("no_log_probs", TensorProto.FLOAT, [0, vocab_size])],
    )
    b.node("If", [want_log_probs], [LOG_PROBS], then_branch=full, else_branch=empty)


def _log_sum_exp(b: _Builder, terms: str) -> str:
    """log sum exp over each row of `terms` (R, n), whose largest value is finite -> (R, 1), as
    max + log sum exp(terms - max). ONNX Runtime's ReduceLogSumExp is the slow way on the CPU:
    172-188 against 27-29 us for these five nodes at (160, 259), a shortlist's 256 sampled ids
    outside it and three other terms (`benchmarks/onnx_ops.py`)."""
    peak = b.one("ReduceMax", [terms], axes=[1], keepdims=1)
    total = b.one("ReduceSum", [b.one("Exp", [b.one("Sub", [terms, peak])]), b.ints(1)], keepdims=1)
    return b.one("Add", [peak, b.one("Log", [total])])


def _shortlisted_logits(
    b: _Builder, features: str, weight: str, masked_bias: str, vocabulary: str, vocab_size: int
) -> tuple[str, str]:
    """(logits (R, V'), ids (V',)): the output layer over the rows `vocabulary` names, or over
    all of them when it is empty (ids then 0 .. V-1). Each in an If whose branches read the
    weight and bias of the outer graph: the empty case runs the plain Gemm on the initializer
    (prepacked by ONNX Runtime), the other gathers the rows first."""
    is_full = b.one("Equal", [b.one("Size", [vocabulary]), b.constant("zero", np.array(0, np.int64))])
    output = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    all_rows = helper.make_graph(
        [helper.make_node("Gemm", [features, weight, masked_bias], ["all_logits"], transB=1)],
        "all_rows",
        [],
        [output("all_logits")],
    )
    some_rows = helper.make_graph(
        [
            helper.make_node("Gather", [weight, vocabulary], ["rows_weight"], axis=0),  # (V', E)
            helper.make_node("Gather", [masked_bias, vocabulary], ["rows_bias"], axis=0),  # (V',)
            helper.make_node("Gemm", [features, "rows_weight", "rows_bias"], ["some_logits"], transB=1),
        ],
        "some_rows",
        [],
        [output("some_logits")],
    )
    logits = b.one("If", [is_full], then_branch=all_rows, else_branch=some_rows)
    ids_type = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, None)  # noqa: E731
    every_id = helper.make_graph(
        [
            helper.make_node("Constant", [], ["start"], value=numpy_helper.from_array(np.array(0, np.int64))),
            helper.make_node(
                "Constant", [], ["limit"], value=numpy_helper.from_array(np.array(vocab_size, np.int64))
            ),
            helper.make_node("Constant", [], ["delta"], value=numpy_helper.from_array(np.array(1, np.int64))),
            helper.make_node("Range", ["start", "limit", "delta"], ["every_id"]),
        ],
        "every_id",
        [],
        [ids_type("every_id")],
    )
    given_ids = helper.make_graph(
        [helper.make_node("Identity", [vocabulary], ["given_ids"])], "given_ids", [], [ids_type("given_ids")]
    )
    ids = b.one("If", [is_full], then_branch=every_id, else_branch=given_ids)
    return logits, ids
