"""Export a model to ONNX: an encoder graph and a decoder-step graph, the two halves of the seam.

`export_onnx(bundle)` writes BUNDLE/onnx/ (encoder.onnx, decoder.onnx, export.json; the layout is
described in `nmt.backends.onnx`, which reads it), replacing an earlier export at once.

    encoder.onnx   encode():      src, src_lengths -> memory.KEY..., state.KEY...
    decoder.onnx   decode_step(): prev_tokens, memory.KEY..., state.KEY... -> log_probs, new_state.KEY...

Recurrent states (h and c for the LSTM cell, h alone for GRU and RNN cells: whatever keys the
model's state has), the input-feeding vector and the Transformer's self-attention key/value caches
are explicit inputs and outputs; the Transformer's cross-attention keys/values are computed once,
by the encoder graph. KEY are the model's own keys (see `nmt.models`).

How: the TorchScript-based exporter (`dynamo=False`; the dynamo one needs onnxscript), opset 17.
- Which axes are dynamic is measured, not listed by hand: `encode` runs on two probe batches that
  differ in batch size and source length, `decode_step` on caches of two lengths; an axis that
  follows the batch is "batch", the source "src_len", the decoded steps "cache_len".
- Tracing bakes in Python branches on shapes, so the encoder is traced on sources longer than one
  token and the decoder on a cache of two positions (a decoding step is always one token).
- Every export is checked: onnx.checker, then ONNX Runtime against PyTorch on a probe batch of
  another batch size and other lengths (one source is EOS alone), from the empty state over
  several steps; an fp32 export whose log-probabilities differ by more than 1e-3 is refused.
- Graph optimizations are ONNX Runtime's, applied when a session loads the files
  (`OnnxModel(optimization=...)`, "all" by default): the files stay plain ONNX, portable across
  execution providers and accepted by onnx.checker, where an offline-optimized file is tied to
  the machine and provider it was optimized for.
- `quantize="int8"`: dynamic quantization (onnxruntime.quantization.quantize_dynamic): int8
  weights, activations quantized on the fly, for MatMul, Gemm (rewritten as MatMul + Add first:
  quantize_dynamic skips Gemm, which holds the recurrent models' output layers), LSTM and Gather.
  ONNX Runtime has no int8 GRU or RNN node: with those cells the recurrence stays float32 and
  only the MatMuls around it are quantized (docs/decode.md lists what each cell gets).
- `quantize="float16"`: both graphs converted to float16 after the float32 export is checked
  (`_to_float16`), memory and state included, for GPUs (ONNX Runtime's CUDA provider); what
  the search reads stays float32. On a CPU it runs too (ONNX Runtime puts Casts around the
  operators without float16 kernels), slower than float32: a way to check it, not to use it.
  Its differences from the model are recorded in export.json, not judged.

Exporter pitfalls met, and their workarounds:
- A packed 1-layer LSTM whose per-step outputs are unused makes the exporter fail
  (`vector::_M_range_check`): the encoder graph is traced on `encode_for_export`, which returns
  whatever extra tensors a model needs kept as graph outputs (the no-attention RNN's
  "encoder_outputs"); the backend does not fetch them.
- The exporter folds a zero-size tensor (the Transformer's empty cache after encode) into a
  constant with the traced batch size; rebuilt from the source's batch size, it stays dynamic.
  ONNX Runtime accepts the zero-length cache inputs of the first decoding step as they are.
- Graph inputs the model does not read (the LSTM decoder's "memory.src_mask") are dropped by
  the exporter; export.json lists each graph's actual inputs, and the backend feeds only those.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from nmt.backends.onnx import OnnxModel  # the export is checked by running it
from nmt.bundle import Bundle
from nmt.checkpoint import atomic_folder
from nmt.data import collate_source
from nmt.errors import NmtError
from nmt.export.onnx_head import add_head
from nmt.models import Seq2SeqModel
from nmt.models.step import Slots
from nmt.onnx_format import (
    ATTENTION,
    BEAM_INDICES,
    DECODER_FILE,
    ENCODER_FILE,
    ENCODER_INPUTS,
    EXPORT_DIR,
    EXPORT_FILE,
    EXPORT_FORMAT,
    GRID_ROWS,
    LOG_PROBS,
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
from nmt.search import BANNED_IDS
from nmt.specials import BOS_ID, EOS_ID

OPSET = 17
QUANTIZATIONS = ("int8", "float16")
TOLERANCE = 1e-3  # largest |log p| difference an fp32 export may show on the check batch
# what a float16 export keeps in float32: what the search reads, and the scalar the backend feeds
FLOAT32_IO = (OUTSIDE_LOG_WEIGHT, LOG_PROBS, *TOP_K_OUTPUTS, ATTENTION)
TRACE_LENGTHS = [7, 4, 2]  # the batch the graphs are traced with: B = 3, S = 7
CHECK_OUTSIDE = 16  # ids outside the check's shortlist sampled for its normaliser
CHECK_LENGTHS = [5, 1]  # the batch they are checked with: B = 2, S = 5, one source EOS alone
CHECK_STEPS = 4
CHECK_TOP_K = 5
FEATURES = "features"  # the traced decoder graph's output, which the head takes
WEIGHTS = "attention_weights"  # the traced decoder graph's attention output, made optional


class ExportError(NmtError):
    """An export could not be made or does not reproduce the model."""


class _EncoderGraph(nn.Module):
    """`encode` as a graph: src (B, S), src_lengths (B,) -> the memory tensors, then the state
    tensors, in the model's key order, then the extra outputs of `encode_for_export`."""

    def __init__(self, model: Seq2SeqModel) -> None:
        super().__init__()
        self.model = model
        self.memory_keys: list[str] = []
        self.state_keys: list[str] = []
        self.extra_keys: list[str] = []

    def output_names(self) -> list[str]:
        names = [MEMORY + key for key in self.memory_keys] + [STATE + key for key in self.state_keys]
        return names + self.extra_keys

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        memory, state, extra = self.model.encode_for_export(src, src_lengths)
        self.memory_keys, self.state_keys, self.extra_keys = list(memory), list(state), list(extra)
        # a zero-size tensor has a shape and no values; built from src's batch size, the exporter
        # keeps that size dynamic instead of folding the tensor into a constant
        state = {
            k: v.new_zeros(src.shape[:1] + v.shape[1:]) if v.numel() == 0 else v for k, v in state.items()
        }
        return (*memory.values(), *state.values(), *extra.values())


class _DecoderGraph(nn.Module):
    """`decode_features` as a graph, after the beam search's reordering of the state:

        prev_tokens (R,), beam_indices (R,), memory tensors, state tensors (R' rows)
        -> features (R, E), new state tensors (R rows)

    The state is first reordered: row r continues row beam_indices[r] of the state given, so
    the state (the Transformer's growing key/value caches) never leaves ONNX Runtime between
    steps; the search hands over the indices, not the tensors. The output head, which turns the
    features into what the search reads, is appended to the traced graph (`_attach_head`).
    Memory and state tensors come in the key orders of the encoder graph, in the model's memory
    layout (one row per sentence with `memory_per_sentence`, else one per row)."""

    def __init__(self, model: Seq2SeqModel, memory_keys: list[str], state_keys: list[str]) -> None:
        super().__init__()
        self.model, self.memory_keys, self.state_keys = model, memory_keys, state_keys
        self.attends = model.attends  # then the step's attention (R, S) is a last output
        # a model taking the memory once per sentence computes any rows of its grid (`Slots`):
        # grid_rows and row_slots follow beam_indices, which then has the rows computed only
        self.slots = model.takes_slots

    def input_names(self) -> list[str]:
        return (
            [PREV_TOKENS, BEAM_INDICES]
            + [GRID_ROWS, ROW_SLOTS] * self.slots
            + [MEMORY + k for k in self.memory_keys]
            + [STATE + k for k in self.state_keys]
        )

    def output_names(self) -> list[str]:
        return [FEATURES] + [NEW_STATE + k for k in self.state_keys] + ([WEIGHTS] if self.attends else [])

    def forward(self, prev_tokens: Tensor, beam_indices: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        slots = {}
        if self.slots:
            slots = {"slots": Slots(*tensors[:2])}
            tensors = tensors[2:]
        memory = dict(zip(self.memory_keys, tensors[: len(self.memory_keys)], strict=True))
        state = {
            key: value.index_select(0, beam_indices)
            for key, value in zip(self.state_keys, tensors[len(self.memory_keys) :], strict=True)
        }
        if self.attends:
            features, new_state, attention = self.model.decode_features_with_attention(
                prev_tokens, memory, state, **slots
            )
            return (features, *(new_state[k] for k in self.state_keys), attention)
        features, new_state = self.model.decode_features(prev_tokens, memory, state, **slots)
        return (features, *(new_state[k] for k in self.state_keys))


def _make_optional(path: Path, output: str, name: str, switch: str) -> None:
    """Compute the decoder graph's output `output` only when asked: the nodes that only it needs
    move into the then-branch of an If on a new input `switch` () bool, whose result is the
    output `name`; else it is an empty (0, 0) tensor. ONNX Runtime runs every node of a graph,
    fetched or not, so without the If the attention's head average and reshapes would run at
    every step of every search (what it reads, the softmax weights, the step computes anyway)."""
    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}

    def ancestors(names: list[str]) -> set[int]:
        found: set[int] = set()
        todo = list(names)
        while todo:
            node = producers.get(todo.pop())
            if node is not None and id(node) not in found:
                found.add(id(node))
                todo.extend(node.input)
        return found

    others = ancestors([value.name for value in graph.output if value.name != output])
    mine = ancestors([output])
    branch_nodes = [node for node in graph.node if id(node) in mine and id(node) not in others]
    kept = [node for node in graph.node if id(node) not in mine or id(node) in others]
    # constants the moved nodes read become Constant nodes of the branch, under new names: a
    # branch that reads the outer graph's initializers broke int8 pre-processing once (onnx_head)
    initializers = {init.name: init for init in graph.initializer}
    still_read = {name for node in kept for name in node.input}
    constants, renamed = [], {}
    for node in branch_nodes:
        for i, input_name in enumerate(node.input):
            if input_name in initializers:
                if input_name not in renamed:
                    renamed[input_name] = f"{input_name}/{name}"
                    value = numpy_helper.to_array(initializers[input_name])
                    constants.append(
                        onnx.helper.make_node(
                            "Constant", [], [renamed[input_name]], value=numpy_helper.from_array(value)
                        )
                    )
                node.input[i] = renamed[input_name]
    inner = f"{output}/{name}"
    for node in branch_nodes:
        node.output[:] = [inner if out == output else out for out in node.output]
    if not branch_nodes:  # the output is a tensor the rest needs too: the branch passes it on
        branch_nodes = [onnx.helper.make_node("Identity", [output], [inner])]
    make = onnx.helper.make_tensor_value_info
    then_branch = onnx.helper.make_graph(
        constants + branch_nodes, f"{name}_wanted", [], [make(inner, onnx.TensorProto.FLOAT, None)]
    )
    empty = numpy_helper.from_array(np.zeros((0, 0), np.float32))
    else_branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Constant", [], [f"no_{name}"], value=empty)],
        f"no_{name}",
        [],
        [make(f"no_{name}", onnx.TensorProto.FLOAT, [0, 0])],
    )
    kept.append(
        onnx.helper.make_node(
            "If", [switch], [name], name=f"{name}_if", then_branch=then_branch, else_branch=else_branch
        )
    )
    del graph.node[:]
    graph.node.extend(kept)
    unused = [init for init in graph.initializer if init.name in renamed and init.name not in still_read]
    for init in unused:
        graph.initializer.remove(init)
    outputs = list(graph.output)
    del graph.output[:]
    graph.output.extend(
        [value for value in outputs if value.name != output]
        + [make(name, onnx.TensorProto.FLOAT, ["attention_rows", "attention_src_len"])]
    )
    inputs = list(graph.input)
    del graph.input[:]
    graph.input.extend([*inputs[:2], make(switch, onnx.TensorProto.BOOL, []), *inputs[2:]])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _attach_head(path: Path, projection: nn.Linear, shortlists: bool = True) -> None:
    """Replace the traced decoder graph's "features" output by the output head (`add_head`):
    inputs k () int64, want_log_probs () bool, vocabulary (V',) int64 (a shortlist's target
    ids, empty for all), outside (M,) int64 and outside_log_weight () float32 (the normaliser's
    sample outside it; the last three not with `shortlists` False) join the graph, and its outputs become
    log_probs, top_log_probs, top_tokens, eos_log_probs, then the new state."""
    model = onnx.load(str(path))
    graph = model.graph
    outputs = {value.name: value for value in graph.output}
    features = outputs.pop(FEATURES)
    rows = features.type.tensor_type.shape.dim[0].dim_param
    inputs = list(graph.input)
    del graph.input[:]
    graph.input.extend(  # after prev_tokens and beam_indices
        [
            *inputs[:2],
            onnx.helper.make_tensor_value_info(K, onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info(WANT_LOG_PROBS, onnx.TensorProto.BOOL, []),
            *(
                [
                    onnx.helper.make_tensor_value_info(VOCABULARY, onnx.TensorProto.INT64, ["vocabulary"]),
                    onnx.helper.make_tensor_value_info(OUTSIDE, onnx.TensorProto.INT64, ["outside"]),
                    onnx.helper.make_tensor_value_info(OUTSIDE_LOG_WEIGHT, onnx.TensorProto.FLOAT, []),
                ]
                * shortlists
            ),
            *inputs[2:],
        ]
    )
    weight = projection.weight.detach().float().numpy()
    bias = None if projection.bias is None else projection.bias.detach().float().numpy()
    add_head(
        graph,
        FEATURES,
        K,
        WANT_LOG_PROBS,
        weight,
        bias,
        BANNED_IDS,
        VOCABULARY if shortlists else None,
        (OUTSIDE, OUTSIDE_LOG_WEIGHT) if shortlists else None,
    )
    make = onnx.helper.make_tensor_value_info
    top_log_probs, top_tokens, eos_log_probs = TOP_K_OUTPUTS
    head = [
        make(LOG_PROBS, onnx.TensorProto.FLOAT, ["log_prob_rows", weight.shape[0]]),
        make(top_log_probs, onnx.TensorProto.FLOAT, [rows, "k"]),
        make(top_tokens, onnx.TensorProto.INT64, [rows, "k"]),
        make(eos_log_probs, onnx.TensorProto.FLOAT, [rows]),
    ]
    del graph.output[:]
    graph.output.extend([*head, *outputs.values()])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _probe(vocab_size: int, lengths: list[int], seed: int) -> tuple[Tensor, Tensor]:
    """A source batch of random non-special tokens with these lengths (EOS included)."""
    generator = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(4, vocab_size, (n - 1,), generator=generator).tolist() for n in lengths]
    return collate_source(seqs)


def _dynamic_axes(a: Tensor, b: Tensor, sizes: dict[str, tuple[int, int]]) -> dict[int, str]:
    """{axis: name} for the axes whose length differs between probes a and b: the size each follows."""
    axes = {}
    for axis, pair in enumerate(zip(a.shape, b.shape, strict=True)):
        if pair[0] != pair[1]:
            name = next((name for name, size in sizes.items() if size == pair), None)
            if name is None:
                raise ExportError(f"cannot tell which size axis {axis} of a {tuple(a.shape)} tensor follows")
            axes[axis] = name
    return axes


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """Trace `module` on `args` into an ONNX file whose inputs and outputs have exactly the shapes
    of the examples, with the dynamic axes named (the exporter leaves made-up names on some)."""
    examples = dict(zip(input_names, args, strict=True))
    examples |= dict(zip(output_names, module.eval()(*args), strict=True))
    with warnings.catch_warnings():
        # TracerWarnings name the Python branches on shapes that tracing bakes in (see the module
        # docstring); the check against PyTorch is what tells whether the graph is right
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        example, axes = examples[value.name], dynamic_axes.get(value.name, {})
        dims = value.type.tensor_type.shape.dim
        if len(dims) != example.dim():
            raise ExportError(f"{path.name}: {value.name} has {len(dims)} axes, expected {example.dim()}")
        for axis, dim in enumerate(dims):
            if axis in axes:
                dim.dim_param = axes[axis]
            else:
                dim.dim_value = example.size(axis)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _gemm_to_matmul(path: Path) -> None:
    """Rewrite Gemm(A, B, C) nodes with a constant B as MatMul + Add, which quantize_dynamic quantizes."""
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        name = f"{node.input[1]}_matmul_{node.name or len(nodes)}"
        graph.initializer.append(
            numpy_helper.from_array(
                np.ascontiguousarray(weight.T if attrs.get("transB", 0) else weight), name
            )
        )
        product = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(
            onnx.helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_MatMul")
        )
        if len(node.input) > 2:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"
                )
            )
    del graph.node[:]
    graph.node.extend(nodes)
    used = _used_names(graph)
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of the graph reads, in its subgraphs (the head's If branches) too."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used |= _used_names(attr.g)
    return used


def _quantize(path: Path) -> None:
    """Dynamic int8 quantization of one graph, in place, after the pre-processing ONNX Runtime
    recommends (shape inference and graph cleanup)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = path.with_name(path.name + ".pre"), path.with_name(path.name + ".int8")
    # onnxruntime.quantization logs each tensor it leaves alone on the root logger, at INFO
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        # symbolic shape inference gives up on these graphs; ONNX's own shape inference still runs
        quant_pre_process(path, prepared, skip_symbolic_shape=True)
        _gemm_to_matmul(prepared)
        quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    quantized.replace(path)
    prepared.unlink()


def _to_float16(path: Path) -> None:
    """One graph in float16, in place: weights, activations and the memory and state it takes and
    gives (ONNX Runtime's converter, `onnxruntime.transformers.float16`; it leaves the operators
    it knows to lack float16 kernels, TopK, Min, Max, in float32 behind Casts, and keeps
    infinities), but for `FLOAT32_IO`. The converter appends its Casts at the end of the graph,
    so the nodes are sorted again for onnx.checker."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    names = {value.name for value in [*model.graph.input, *model.graph.output]}
    converted = convert_float_to_float16(model, keep_io_types=[n for n in FLOAT32_IO if n in names])
    _sort_nodes(converted.graph)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(path))


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (an If's branches) read from the graphs around it."""
    names: set[str] = set()
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            inner = {*(i.name for i in graph.input), *(i.name for i in graph.initializer)}
            inner |= {output for n in graph.node for output in n.output}
            for n in graph.node:
                names |= {name for name in [*n.input, *_outer_names(n)] if name and name not in inner}
    return names


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Order the graph's nodes so that each comes after every node whose output it reads, its
    subgraphs' reads included; nodes already in order keep it."""
    nodes = list(graph.node)
    produced = {output for node in nodes for output in node.output}
    needs = [({*node.input} | _outer_names(node)) & produced for node in nodes]
    done: set[str] = set()
    ordered: list[onnx.NodeProto] = []
    waiting = list(range(len(nodes)))
    while waiting:  # each pass places, in their order, the nodes whose inputs are there by then
        left = []
        for i in waiting:
            if needs[i] <= done:
                ordered.append(nodes[i])
                done.update(nodes[i].output)
            else:
                left.append(i)
        if len(left) == len(waiting):
            raise ExportError("the float16 graph has a cycle: an exporter problem, please report it")
        waiting = left
    del graph.node[:]
    graph.node.extend(ordered)


def _graph_description(path: Path) -> dict[str, Any]:
    """Input and output names of a graph in order, with their shapes (axis names where dynamic)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def shape(value: onnx.ValueInfoProto) -> list[int | str]:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    inputs = [value for value in graph.input if value.name not in initializers]
    return {
        "inputs": [value.name for value in inputs],
        "outputs": [value.name for value in graph.output],
        "shapes": {value.name: shape(value) for value in [*inputs, *graph.output]},
    }


@torch.no_grad()
def _max_difference(
    model: Seq2SeqModel, folder: Path, src: Tensor, src_lengths: Tensor
) -> tuple[float, float]:
    """Largest |log p| difference between PyTorch and ONNX Runtime over the first decoding steps,
    in the full log-probabilities and in the ranked top k (values; PAD and BOS excluded) and EOS;
    and the largest difference in the attention (0 for a model without attention)."""
    exported = OnnxModel(folder)
    memory, state = model.encode(src, src_lengths)
    onnx_memory, onnx_state = exported.encode(src, src_lengths)
    prev_tokens = torch.full((src.size(0),), BOS_ID)
    k = min(CHECK_TOP_K, exported.vocab_size - len(BANNED_IDS))
    worst = worst_attention = 0.0
    for _ in range(CHECK_STEPS):
        if model.attends:
            log_probs, state, attention = model.decode_step_with_attention(prev_tokens, memory, state)
            *_, onnx_attention = exported.decode_top_k_with_attention(prev_tokens, onnx_memory, onnx_state, k)
            worst_attention = max(worst_attention, (attention - onnx_attention).abs().max().item())
        else:
            log_probs, state = model.decode_step(prev_tokens, memory, state)
        best, _tokens, eos, _ = exported.decode_top_k(prev_tokens, onnx_memory, onnx_state, k)
        onnx_log_probs, onnx_state = exported.decode_step(prev_tokens, onnx_memory, onnx_state)
        ranked = log_probs.index_fill(1, torch.tensor(BANNED_IDS), float("-inf")).topk(k, dim=1).values
        worst = max(
            worst,
            (log_probs - onnx_log_probs).abs().max().item(),
            (ranked - best).abs().max().item(),
            (log_probs[:, EOS_ID] - eos).abs().max().item(),
        )
        prev_tokens = log_probs.argmax(dim=-1)
    return worst, worst_attention


@torch.no_grad()
def _max_shortlist_difference(model: Seq2SeqModel, folder: Path, src: Tensor, src_lengths: Tensor) -> float:
    """Largest |log p| difference between PyTorch and ONNX Runtime decoding over a shortlist's
    vocabulary (the specials and every other id up to 128 of them, `with_vocabulary`, with a sample
    of CHECK_OUTSIDE ids outside it for the normaliser): the full
    log-probabilities (-inf outside it in both), the ranked top k with their tokens, EOS."""
    vocab_size = model.projection.weight.size(0)
    candidates = torch.cat([torch.arange(4), torch.arange(5, vocab_size, 2)])
    size = candidates.numel() // 64 * 64
    if size == 0:  # a vocabulary too small for a shortlist of its own
        return 0.0
    vocabulary = candidates[: min(128, size)]
    shortlisted = model.with_vocabulary(vocabulary, CHECK_OUTSIDE)
    exported = OnnxModel(folder).with_vocabulary(vocabulary, CHECK_OUTSIDE)
    memory, state = shortlisted.encode(src, src_lengths)
    onnx_memory, onnx_state = exported.encode(src, src_lengths)
    prev_tokens = torch.full((src.size(0),), BOS_ID)
    worst = 0.0
    for _ in range(CHECK_STEPS):
        best, tokens, eos, _ = shortlisted.decode_top_k(prev_tokens, memory, state, CHECK_TOP_K)
        log_probs, state = shortlisted.decode_step(prev_tokens, memory, state)
        onnx_best, onnx_tokens, onnx_eos, _ = exported.decode_top_k(
            prev_tokens, onnx_memory, onnx_state, CHECK_TOP_K
        )
        onnx_log_probs, onnx_state = exported.decode_step(prev_tokens, onnx_memory, onnx_state)
        inside = torch.isfinite(log_probs)
        if not torch.equal(inside, torch.isfinite(onnx_log_probs)) or not torch.equal(tokens, onnx_tokens):
            return math.inf
        worst = max(
            worst,
            (log_probs[inside] - onnx_log_probs[inside]).abs().max().item(),
            (best - onnx_best).abs().max().item(),
            (eos - onnx_eos).abs().max().item(),
        )
        prev_tokens = tokens[:, 0]
    return worst


@torch.no_grad()
def export_model(
    model: Seq2SeqModel, folder: Path, version: str | None = None, quantize: str | None = None
) -> dict[str, Any]:
    """Write encoder.onnx, decoder.onnx and export.json for `model` (on the CPU) into `folder`;
    returns what export.json holds. `version` is the bundle's, which the backend checks on loading."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
    encoder = _EncoderGraph(model.cpu()).eval()
    trace_src, trace_lengths = _probe(encoder.model.src_vocab_size, TRACE_LENGTHS, seed=1)
    check_src, check_lengths = _probe(encoder.model.src_vocab_size, CHECK_LENGTHS, seed=2)
    sizes = {
        "batch": (len(TRACE_LENGTHS), len(CHECK_LENGTHS)),
        "src_len": (max(TRACE_LENGTHS), max(CHECK_LENGTHS)),
    }
    traced, checked = encoder(trace_src, trace_lengths), encoder(check_src, check_lengths)
    src_name, lengths_name = ENCODER_INPUTS
    axes = {src_name: {0: "batch", 1: "src_len"}, lengths_name: {0: "batch"}}
    for name, a, b in zip(encoder.output_names(), traced, checked, strict=True):
        axes[name] = _dynamic_axes(a, b, sizes)
    _export_graph(
        encoder,
        (trace_src, trace_lengths),
        folder / ENCODER_FILE,
        list(ENCODER_INPUTS),
        encoder.output_names(),
        axes,
    )

    decoder = _DecoderGraph(model, encoder.memory_keys, encoder.state_keys).eval()
    memory = list(traced[: len(encoder.memory_keys)])
    state = list(traced[len(encoder.memory_keys) : len(encoder.memory_keys) + len(encoder.state_keys)])
    batch = len(TRACE_LENGTHS)
    projection = model.projection
    prev_tokens = torch.full((batch,), BOS_ID)
    steps = []
    every = [torch.arange(batch)] * (2 * decoder.slots)  # grid_rows, row_slots: every row
    for _ in range(2):  # the state after one step and after two: an axis that grew is the cache
        features, *state = decoder(prev_tokens, torch.arange(batch), *every, *memory, *state)
        state = state[: len(encoder.state_keys)]  # without the attention
        steps.append(state)
        prev_tokens = projection(features).argmax(dim=-1)
    beam_indices = torch.tensor([1, 0, 0])  # traced on a reordering that is not the identity
    slots: list[Tensor] = []
    if decoder.slots:  # and on 2 rows of the 3 places: the second left out
        prev_tokens, beam_indices = prev_tokens[:2], torch.tensor([1, 0])
        slots = [torch.tensor([0, 2, 1]), torch.tensor([0, 2])]
    decoder_axes: dict[str, dict[int, str]] = {
        PREV_TOKENS: {0: "batch"},
        BEAM_INDICES: {0: "batch"},
        FEATURES: {0: "batch"},
        WEIGHTS: {0: "batch", 1: "src_len"},
    }
    if decoder.slots:
        decoder_axes |= {GRID_ROWS: {0: "grid"}, ROW_SLOTS: {0: "batch"}}
    for key in encoder.memory_keys:  # one row per sentence (Transformer) or per row (LSTMs)
        decoder_axes[MEMORY + key] = {
            axis: "memory_batch" if name == "batch" else name for axis, name in axes[MEMORY + key].items()
        }
    for key, one, two in zip(encoder.state_keys, *steps, strict=True):
        cache = _dynamic_axes(one, two, {"cache_len": (1, 2)})
        # the state given has the rows of the previous step, which beam_indices picks from
        given = {axis: "state_batch" if name == "batch" else name for axis, name in axes[STATE + key].items()}
        decoder_axes[STATE + key] = given | cache
        decoder_axes[NEW_STATE + key] = axes[STATE + key] | {axis: "new_cache_len" for axis in cache}
    _export_graph(
        decoder,
        (prev_tokens, beam_indices, *slots, *memory, *state),
        folder / DECODER_FILE,
        decoder.input_names(),
        decoder.output_names(),
        decoder_axes,
    )
    if decoder.attends:
        _make_optional(folder / DECODER_FILE, WEIGHTS, ATTENTION, WANT_ATTENTION)
    # an int8 export keeps the plain head: quantize_dynamic leaves the output layer of the head's
    # shortlist If branches in float32 (and the pre-processing put a per-step Transpose of the
    # weight there), which cost the int8 export most of its speed-up
    shortlists = quantize != "int8"
    _attach_head(folder / DECODER_FILE, projection, shortlists=shortlists)

    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": version,
        "model": type(model).__name__,
        "opset": OPSET,
        "quantization": quantize,
        # the decoder takes the memory once per sentence, shared by its consecutive rows
        "memory_per_sentence": model.memory_per_sentence,
    }
    _write_meta(folder, meta)  # the check loads the folder as the backend will
    difference, attention = {}, {}
    difference["float32"], attention["float32"] = _max_difference(model, folder, check_src, check_lengths)
    for what, value in (("log-probability", difference["float32"]), ("attention", attention["float32"])):
        if value > TOLERANCE:
            raise ExportError(
                f"the ONNX graphs differ from the model by {value:.2g} in {what}"
                f" (more than {TOLERANCE}): an exporter problem, please report it"
            )
    shortlist = (
        {"float32": _max_shortlist_difference(model, folder, check_src, check_lengths)} if shortlists else {}
    )
    if shortlist.get("float32", 0.0) > TOLERANCE:
        raise ExportError(
            f"the ONNX graphs decoding over a shortlist differ from the model by {shortlist['float32']:.2g} "
            f"(more than {TOLERANCE}): an exporter problem, please report it"
        )
    if quantize == "int8":
        for name in (ENCODER_FILE, DECODER_FILE):
            _quantize(folder / name)
    elif quantize == "float16":
        for name in (ENCODER_FILE, DECODER_FILE):
            _to_float16(folder / name)
        shortlist["float16"] = _max_shortlist_difference(model, folder, check_src, check_lengths)
    if quantize is not None:  # recorded, not judged: what the lower precision costs
        difference[quantize], attention[quantize] = _max_difference(model, folder, check_src, check_lengths)
    meta["check"] = {
        "sentences": len(CHECK_LENGTHS),
        "steps": CHECK_STEPS,
        "max_abs_log_prob_difference": difference,
        "max_abs_attention_difference": attention if model.attends else None,
        "max_abs_shortlist_log_prob_difference": shortlist if shortlists else None,  # over 128 ids
    }
    meta["exporter"] = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    return _write_meta(folder, meta)


def _write_meta(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write export.json: `meta` with each graph's input and output names, read from the files."""
    meta = meta | {
        "encoder": _graph_description(folder / ENCODER_FILE),
        "decoder": _graph_description(folder / DECODER_FILE),
    }
    (folder / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def export_onnx(bundle: Bundle, quantize: str | None = None) -> Path:
    """Export the bundle's model into BUNDLE/onnx/, replacing an earlier export; returns that folder.

    The new export is written to a temporary folder beside it and renamed into place, so a failed
    or interrupted export leaves the previous one as it was."""
    model = bundle.load_model("cpu")
    target = bundle.path / EXPORT_DIR
    return atomic_folder(target, lambda tmp: export_model(model, tmp, bundle.version, quantize))
