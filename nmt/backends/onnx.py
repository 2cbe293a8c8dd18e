"""ONNX Runtime backend: an export's two graphs behind the `encode` / `decode_step` seam.

An export (written by `nmt.export.onnx`) is a folder, BUNDLE/onnx/, with an encoder graph, a
decoder-step graph and export.json; its format is described, and its names are defined, in
`nmt.onnx_format`.

What crosses between Python and ONNX Runtime at each decoding step, and what does not:
- memory and state live in ONNX Runtime's own buffers (`OrtValue`s, on the execution provider's
  device), bound to the next run as they are (I/O binding): no copy through numpy or the host;
- the beam search's reordering of the state is not applied by the search: `select_state` only
  records the rows, and the decoder graph gathers them (its `beam_indices` input) before using
  the state, so the growing key/value caches are reordered inside ONNX Runtime, never in Python;
- with `decode_top_k` the graph also ranks each row's continuations, and only (R, k) candidates
  and the EOS log-probabilities come back; the (R, V) log-probabilities are not even computed
  (see `nmt.export.onnx_head`);
- memory (cross-attention keys and values, computed once by the encoder graph) is only re-selected
  when finished sentences leave the batch, by a one-node Gather graph on the same device; a
  memory taken once per sentence (`memory_per_sentence`) is never copied per beam.
On a GPU (CUDAExecutionProvider, with onnxruntime-gpu) the state stays on the device; the small
per-step outputs are bound to host memory, where the search reads them.

`OnnxModel.encode` / `decode_step` return `OrtTensors`, a read-only mapping that turns into torch
tensors on access, so code written for the PyTorch models (the tests, `nmt.search.select`) works
unchanged, only slower.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

from nmt.bundle import Bundle, bundle_folder
from nmt.errors import BundleError, NoAttention
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
from nmt.search import BANNED_IDS, outside_sample
from nmt.specials import PAD_ID

log = logging.getLogger("nmt.backends.onnx")

# every decoder input but the memory and the state, each fed when the graph declares it
STEP_INPUTS = (
    PREV_TOKENS,
    BEAM_INDICES,
    K,
    WANT_LOG_PROBS,
    WANT_ATTENTION,
    VOCABULARY,
    OUTSIDE,
    OUTSIDE_LOG_WEIGHT,
    GRID_ROWS,
    ROW_SLOTS,
)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ONNX_TYPES = {
    "tensor(float)": onnx.TensorProto.FLOAT,
    "tensor(float16)": onnx.TensorProto.FLOAT16,
    "tensor(bool)": onnx.TensorProto.BOOL,
    "tensor(int64)": onnx.TensorProto.INT64,
}

TensorDict = dict[str, Tensor]


def _export_command(bundle: Path) -> str:
    return f"nmt export --model {bundle} --format onnx"


def read_export(folder: Path) -> dict[str, Any]:
    """export.json of an export folder, checked to be of this format and to name both graphs,
    which must exist."""
    meta_file = folder / EXPORT_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        for graph in ("encoder", "decoder"):
            if not (isinstance(meta[graph]["inputs"], list) and isinstance(meta[graph]["outputs"], list)):
                raise TypeError
        version, export_format = meta["version"], meta.get("format")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BundleError(
            f"{meta_file}: unreadable export description ({error.__class__.__name__})"
        ) from None
    if not (version is None or isinstance(version, str)):
        raise BundleError(f"{meta_file}: unreadable export description (version)")
    if export_format != EXPORT_FORMAT:
        raise BundleError(
            f"{folder}: export format {export_format}, this version of nmt reads format {EXPORT_FORMAT}"
        )
    for name in (ENCODER_FILE, DECODER_FILE):
        if not (folder / name).is_file():
            raise BundleError(f"{folder}: incomplete ONNX export, {name} is missing")
    return meta


def session_options(
    threads: int | None = None, optimization: str = "all", spinning: bool = False
) -> ort.SessionOptions:
    """Options for the sessions. `threads` (intra-op) defaults to PyTorch's thread count, so both
    backends honour OMP_NUM_THREADS alike; ONNX Runtime's own default is every physical core.
    Idle pool threads sleep (`spinning=False`, the default) instead of spin-waiting for work
    (`spinning=True`, ONNX Runtime's default): on cores shared with other busy processes, a
    spinning thread takes the core from the thread that has work (docs/decode.md has the
    measurement); spinning can only save the wake-up latency on cores of one's own. One thread
    has no pool."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # the graphs are one chain of ops: nothing to run side by side
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.log_severity_level = 3  # errors only: warnings would interleave with the CLI's output
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def providers_for(device: torch.device) -> list[str | tuple[str, dict[str, str]]]:
    """CUDA when asked for and this onnxruntime build has it, else the CPU. On CUDA, fp32 stays
    fp32: TF32 matrix products (ONNX Runtime's default on Ampere and later GPUs) are turned off,
    as PyTorch has them off by default, so both backends compute the same numbers."""
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            options = {"use_tf32": "0"}
            if device.index:  # naming device 0 only makes onnxruntime warn it found no plugin for it
                options["device_id"] = str(device.index)
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); using the CPU")
    return ["CPUExecutionProvider"]


class OrtTensors(Mapping[str, Tensor]):
    """Memory or state of `OnnxModel`: ONNX Runtime values by key, standing for the values' rows
    in `rows` order (None = all in order): for a state, the pending selection recorded by
    `OnnxModel.select_state`, applied by the decoder graph. A row -1 stands for a row not kept
    (a finished hypothesis's, see `OnnxModel.skips_finished`). Reading a key gives a torch tensor
    of the rows stood for, as the PyTorch model would have it (zeros for rows not kept)."""

    def __init__(self, values: dict[str, ort.OrtValue], rows: Tensor | None = None) -> None:
        self.ort_values = values
        self.rows = rows

    @property
    def stored(self) -> int:
        """Rows of the values."""
        return next(iter(self.ort_values.values())).shape()[0] if self.ort_values else 0

    @property
    def size(self) -> int:
        """Rows stood for."""
        return self.rows.numel() if self.rows is not None else self.stored

    def __getitem__(self, key: str) -> Tensor:
        tensor = torch.from_numpy(self.ort_values[key].numpy())  # no copy on the CPU; to the host from a GPU
        if self.rows is None:
            return tensor
        rows = self.rows.cpu()
        return tensor.index_select(0, rows.clamp(min=0)) * (rows >= 0).view(-1, *[1] * (tensor.dim() - 1))

    def __iter__(self) -> Iterator[str]:
        return iter(self.ort_values)

    def __len__(self) -> int:
        return len(self.ort_values)


class OnnxModel:
    """The seam `nmt.models.step.Seq2Seq` (`encode`, `decode_step`, `decode_top_k`,
    `select_memory`, `select_state`, `memory_per_sentence`) over ONNX Runtime sessions.

    device: where the returned tensors live (and which execution provider runs, see `providers_for`);
    threads: intra-op threads of each session; optimization: ONNX Runtime's graph optimization level
    ("disable", "basic", "extended", "all"), applied when the sessions load the plain ONNX files;
    spinning: see `session_options`.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        optimization: str = "all",
        spinning: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.meta = read_export(self.folder)
        self.device = torch.device(device)
        self.providers = providers_for(self.device)
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        self._ort_device = ("cuda", self.device.index or 0) if on_gpu else ("cpu", 0)
        options = session_options(threads, optimization, spinning)
        self.float16 = self.meta.get("quantization") == "float16"  # `nmt export --quantize float16`
        if self.float16 and not on_gpu:
            log.warning("%s: a float16 export (for GPUs) runs on the CPU slower than float32", self.folder)
        self.encoder = self._session(ENCODER_FILE, options)
        self.decoder = self._session(DECODER_FILE, options)
        encoder_outputs = {o.name: o.type for o in self.encoder.get_outputs()}
        self.memory_keys = [n.removeprefix(MEMORY) for n in encoder_outputs if n.startswith(MEMORY)]
        self.state_keys = [n.removeprefix(STATE) for n in encoder_outputs if n.startswith(STATE)]
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        declared = {o.name for o in self.decoder.get_outputs()}
        wanted = {LOG_PROBS, *TOP_K_OUTPUTS, *(NEW_STATE + key for key in self.state_keys)}
        if not wanted <= declared or not {BEAM_INDICES, K, WANT_LOG_PROBS} <= self._decoder_inputs:
            raise BundleError(
                f"{self.folder}: the decoder graph's inputs and outputs do not match the encoder's"
            )
        fed = {
            *STEP_INPUTS,
            *(MEMORY + key for key in self.memory_keys),
            *(STATE + key for key in self.state_keys),
        }
        if unknown := sorted(self._decoder_inputs - fed):  # a graph of another build of this format
            raise BundleError(
                f"{self.folder}: the decoder graph takes inputs this version cannot feed ({', '.join(unknown)})"
            )
        # exports made before alignments have no attention output: they translate, without it
        self.attends = ATTENTION in declared and WANT_ATTENTION in self._decoder_inputs
        self.vocab_size = self.decoder.get_outputs()[0].shape[1]
        self.memory_per_sentence = bool(self.meta.get("memory_per_sentence", False))
        # the decoder graph gathers the state's rows at every step: fewer rows cost no copy
        self.cheap_select = True
        # a decoder taking the memory once per sentence computes only the rows asked for (the
        # Transformer's, exported since): the search leaves its finished hypotheses out
        self._takes_slots = GRID_ROWS in self._decoder_inputs
        self.skips_finished = self._takes_slots
        self._scalars: dict[tuple[str, int | bool], ort.OrtValue] = {}  # see `_scalar`
        # int8 exports and those made before shortlists have no vocabulary input: they
        # translate, without a shortlist
        self.takes_vocabulary = VOCABULARY in self._decoder_inputs
        self._vocabulary = self._value(np.zeros(0, np.int64))  # empty: the full vocabulary
        # no sample outside it: PAD, whose masked logit adds nothing (`nmt.search.outside_sample`)
        self._outside = self._value(np.array([PAD_ID], np.int64)), self._value(np.array(-np.inf, np.float32))
        self._gather = ort.InferenceSession(
            _gather_graph({key: encoder_outputs[MEMORY + key] for key in self.memory_keys}),
            session_options(threads, spinning=spinning),
            providers=self.providers,
        )

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: str | torch.device = "cpu", **kwargs: Any) -> OnnxModel:
        """The export in BUNDLE/onnx/, refused unless it was made from this very bundle version."""
        folder = bundle_folder(bundle.path, EXPORT_DIR, "onnx export")
        if not (folder / EXPORT_FILE).is_file():
            raise BundleError(f"{bundle.path}: no ONNX export; run {_export_command(bundle.path)} first")
        try:
            meta = read_export(folder)
            if meta["version"] != bundle.version:
                raise BundleError(
                    f"{folder}: exported from bundle version {meta['version']}, "
                    f"but the bundle is version {bundle.version}"
                )
            return cls(folder, device, **kwargs)
        except BundleError as error:
            raise BundleError(f"{error}; run {_export_command(bundle.path)} again") from None

    def _session(self, name: str, options: ort.SessionOptions) -> ort.InferenceSession:
        # ONNX Runtime 1.32's NCHWc layout pass (for convolutions, which these graphs have none
        # of) crashes the process on a float16 GRU decoder on the CPU: off for float16 exports
        disabled = ["NchwcTransformer"] if self.float16 else None
        try:
            return ort.InferenceSession(
                str(self.folder / name), options, providers=self.providers, disabled_optimizers=disabled
            )
        except Exception as error:  # onnxruntime raises its own classes for unreadable or invalid graphs
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BundleError(f"{self.folder / name}: ONNX Runtime cannot load it ({first_line})") from None

    # -- moving values in and out ------------------------------------------------------------

    def _value(self, tensor: Tensor | np.ndarray) -> ort.OrtValue:
        """A torch tensor as an OrtValue on the session's device (no copy for a CPU tensor)."""
        # force: detached and on the host (a copy from a GPU; none on the CPU), in one call
        array = np.ascontiguousarray(tensor if isinstance(tensor, np.ndarray) else tensor.numpy(force=True))
        return ort.OrtValue.ortvalue_from_numpy(array, *self._ort_device)

    def _scalar(self, value: np.generic) -> ort.OrtValue:
        """A () value on the session's device, made once per value and kept."""
        key = (value.dtype.str, value.item())
        if key not in self._scalars:
            self._scalars[key] = self._value(np.array(value))
        return self._scalars[key]

    def _values(self, tensors: Mapping[str, Tensor]) -> OrtTensors:
        """Memory or state as given: ours as they are, anything else (a dict of tensors) converted."""
        if isinstance(tensors, OrtTensors):
            return tensors
        return OrtTensors({key: self._value(tensor) for key, tensor in tensors.items()})

    def _run(
        self, session: ort.InferenceSession, inputs: dict[str, ort.OrtValue], outputs: dict[str, str]
    ) -> list[ort.OrtValue]:
        """Run with I/O binding: inputs bound where they are, outputs {name: "device" | "host"}
        left in ONNX Runtime's buffers on the device or in host memory."""
        binding = session.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name, where in outputs.items():
            if where == "host":
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, *self._ort_device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    def _tensor(self, value: ort.OrtValue | np.ndarray) -> Tensor:
        tensor = torch.from_numpy(value if isinstance(value, np.ndarray) else value.numpy())
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    # -- the seam ------------------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[OrtTensors, OrtTensors]:
        """src (B, S), src_lengths (B,) -> (memory, state), with the PyTorch model's keys."""
        names = [MEMORY + key for key in self.memory_keys] + [STATE + key for key in self.state_keys]
        values = self._run(
            self.encoder,
            dict(zip(ENCODER_INPUTS, (self._value(src), self._value(src_lengths)), strict=True)),
            dict.fromkeys(names, "device"),
        )
        found = dict(zip(names, values, strict=True))
        memory = OrtTensors({key: found[MEMORY + key] for key in self.memory_keys})
        state = OrtTensors({key: found[STATE + key] for key in self.state_keys})
        return memory, state

    def select_memory(self, memory: Mapping[str, Tensor], rows: Tensor) -> OrtTensors:
        """The memory's `rows` (dim 0), gathered on the device: each sentence's beams, or the
        sentences that remain (one row each when the decoder takes the memory once per sentence,
        `memory_per_sentence`, see `nmt.models.step`)."""
        memory = self._values(memory)
        if torch.equal(rows, torch.arange(memory.stored, device=rows.device)):
            return memory
        return OrtTensors(self._gather_rows(memory.ort_values, rows))

    def _gather_rows(self, values: dict[str, ort.OrtValue], rows: Tensor) -> dict[str, ort.OrtValue]:
        """Rows (dim 0) of every value, gathered on the device."""
        inputs = {"rows": self._value(rows)} | {MEMORY + key: value for key, value in values.items()}
        return dict(
            zip(values, self._run(self._gather, inputs, dict.fromkeys(values, "device")), strict=True)
        )

    def select_state(self, state: Mapping[str, Tensor], rows: Tensor) -> OrtTensors:
        """The state's `rows`, taken by the decoder graph at the next step: only recorded here."""
        state = self._values(state)
        if state.rows is not None:  # a row -1 (not to compute, `skips_finished`) stays -1
            rows = rows.to(state.rows.device)
            rows = torch.where(rows >= 0, state.rows.index_select(0, rows.clamp(min=0)), -1)
        return OrtTensors(state.ort_values, rows)

    def _decode(
        self,
        prev_tokens: Tensor,
        memory: Mapping[str, Tensor],
        state: Mapping[str, Tensor],
        k: int,
        fetch: dict[str, str],
    ) -> tuple[list[Tensor], OrtTensors]:
        """Run the decoder graph: the `fetch` outputs (R rows), then the new state. With
        "log_probs" among `fetch` the graph computes them; without, it only ranks. Likewise
        "attention". State rows -1 (`skips_finished`) are not computed: their outputs are zeros,
        and the new state has no row for them."""
        if ATTENTION in fetch and not self.attends:
            raise NoAttention(f"{self.folder}: this ONNX export has no attention output")
        memory, state = self._values(memory), self._values(state)
        rows = state.rows if state.rows is not None else torch.arange(state.size)
        top_k = min(k, self.vocab_size - len(BANNED_IDS))  # see TOP_K_OUTPUTS
        inputs = {
            K: self._scalar(np.int64(top_k)),
            WANT_LOG_PROBS: self._scalar(np.bool_(LOG_PROBS in fetch)),
            WANT_ATTENTION: self._scalar(np.bool_(ATTENTION in fetch)),
            VOCABULARY: self._vocabulary,
            OUTSIDE: self._outside[0],
            OUTSIDE_LOG_WEIGHT: self._outside[1],
        }
        places = None  # (R',) the rows computed, when not all are
        if self._takes_slots:
            row_ids = rows.numpy(force=True)
            grid = np.arange(row_ids.size)
            if (row_ids < 0).any():
                places = np.flatnonzero(row_ids >= 0)
                grid = np.full(row_ids.size, places.size)  # a place without a row: the zero query
                grid[places] = np.arange(places.size)
                index = torch.from_numpy(places)
                prev_tokens, rows = prev_tokens[index.to(prev_tokens.device)], rows[index.to(rows.device)]
            inputs[GRID_ROWS], inputs[ROW_SLOTS] = (
                self._value(grid),
                self._value(grid if places is None else places),
            )
        inputs[PREV_TOKENS], inputs[BEAM_INDICES] = self._value(prev_tokens), self._value(rows)
        inputs.update((MEMORY + key, value) for key, value in memory.ort_values.items())
        inputs.update((STATE + key, value) for key, value in state.ort_values.items())
        inputs = {name: value for name, value in inputs.items() if name in self._decoder_inputs}
        names = [NEW_STATE + key for key in self.state_keys]
        values = self._run(self.decoder, inputs, fetch | dict.fromkeys(names, "device"))
        new_state = OrtTensors(dict(zip(self.state_keys, values[len(fetch) :], strict=True)))
        if places is None:
            return [self._tensor(value) for value in values[: len(fetch)]], new_state
        kept = np.full(row_ids.size, -1)  # each row's row in the new state
        kept[places] = np.arange(places.size)
        new_state.rows = torch.from_numpy(kept)
        return [
            self._spread(value.numpy(), places, row_ids.size) for value in values[: len(fetch)]
        ], new_state

    def _spread(self, array: np.ndarray, places: np.ndarray, rows: int) -> Tensor:
        """(R', ...) outputs of the rows computed -> (R, ...), zeros in the others."""
        full = np.zeros((rows, *array.shape[1:]), array.dtype)
        full[places] = array
        return self._tensor(full)

    def with_vocabulary(self, vocabulary: Tensor, outside: int = 0) -> OnnxModel:
        """This model decoding over the target ids `vocabulary` (V',) only: a shortlist's (see
        `nmt.models.step`); the decoder graph gathers those rows of its output layer, and the
        rows of `outside` sampled ids outside them for its normaliser (`nmt.search.outside_sample`)."""
        return _with_vocabulary(self, vocabulary, outside)

    def check_takes_vocabulary(self) -> None:
        """BundleError unless the decoder graph takes a vocabulary (exports made since shortlists)."""
        if not self.takes_vocabulary:
            raise BundleError(
                f"{self.folder}: this export has no vocabulary input (int8 exports and those made "
                f"before shortlists have none), so it cannot decode with a shortlist; run "
                f"{_export_command(self.folder.parent)} (float32) again"
            )

    def decode_step(
        self, prev_tokens: Tensor, memory: Mapping[str, Tensor], state: Mapping[str, Tensor]
    ) -> tuple[Tensor, OrtTensors]:
        """prev_tokens (R,) -> log-probabilities (R, V) float32 and the new state."""
        (log_probs,), new_state = self._decode(prev_tokens, memory, state, 1, {LOG_PROBS: "host"})
        return log_probs, new_state

    def decode_top_k(
        self, prev_tokens: Tensor, memory: Mapping[str, Tensor], state: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor, Tensor, OrtTensors]:
        """prev_tokens (R,) -> each row's k best log-probabilities (R, k') and their tokens (R, k'),
        BANNED_IDS (PAD, BOS) excluded, best first (k' = k, or V - 2 when that is smaller); the EOS
        log-probabilities (R,); the new state."""
        (best, tokens, eos), new_state = self._decode(
            prev_tokens, memory, state, k, dict.fromkeys(TOP_K_OUTPUTS, "host")
        )
        return best, tokens, eos, new_state

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: Mapping[str, Tensor], state: Mapping[str, Tensor]
    ) -> tuple[Tensor, OrtTensors, Tensor]:
        """`decode_step`, with the step's attention over the source (R, S) (see `nmt.models.step`)."""
        fetch = {LOG_PROBS: "host", ATTENTION: "host"}
        (log_probs, attention), new_state = self._decode(prev_tokens, memory, state, 1, fetch)
        return log_probs, new_state, attention

    def decode_top_k_with_attention(
        self, prev_tokens: Tensor, memory: Mapping[str, Tensor], state: Mapping[str, Tensor], k: int
    ) -> tuple[Tensor, Tensor, Tensor, OrtTensors, Tensor]:
        """`decode_top_k`, with the step's attention over the source (R, S) last."""
        fetch = dict.fromkeys([*TOP_K_OUTPUTS, ATTENTION], "host")
        (best, tokens, eos, attention), new_state = self._decode(prev_tokens, memory, state, k, fetch)
        return best, tokens, eos, new_state, attention


def _with_vocabulary(model: OnnxModel, vocabulary: Tensor, outside: int) -> OnnxModel:
    """`OnnxModel.with_vocabulary`: the same sessions, other vocabulary and outside inputs."""
    model.check_takes_vocabulary()
    if vocabulary.numel() % 64 or not torch.equal(vocabulary[:4].cpu(), torch.arange(4)):
        raise ValueError("a shortlist vocabulary starts with the ids 0..3 and has a multiple of 64 ids")
    ids = vocabulary.long()
    view = copy.copy(model)
    view._vocabulary = model._value(ids)
    sample, log_weight = outside_sample(ids, model.vocab_size, outside)
    if sample.numel():
        view._outside = model._value(sample), model._value(np.array(log_weight, np.float32))
    return view


def _gather_graph(types: dict[str, str]) -> bytes:
    """A graph taking rows (n,) int64 and one tensor per memory key -> each tensor's rows, named
    as the inputs; `types` are ONNX Runtime's type names ("tensor(float)") by key."""
    from onnx import helper

    rows = helper.make_tensor_value_info("rows", onnx.TensorProto.INT64, ["n"])
    inputs, outputs, nodes = [rows], [], []
    for key, type_name in types.items():
        inputs.append(helper.make_tensor_value_info(MEMORY + key, _ONNX_TYPES[type_name], None))
        outputs.append(helper.make_tensor_value_info(key, _ONNX_TYPES[type_name], None))
        nodes.append(helper.make_node("Gather", [MEMORY + key, "rows"], [key], axis=0))
    graph = helper.make_graph(nodes, "select_rows", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()
