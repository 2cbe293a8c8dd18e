"""ONNX Runtime backend: an export's two graphs behind the `encode` / `decode_step` seam.

An export (written by `nmt.export.onnx`) is a folder, BUNDLE/onnx/:

    encoder.onnx   src (B, S) int64, src_lengths (B,) int64 -> "memory.KEY"..., "state.KEY"...
    decoder.onnx   prev_tokens (B,) int64, "memory.KEY"..., "state.KEY"...
                   -> log_probs (B, V) float32, "new_state.KEY"...
    export.json    the bundle's version, each graph's input and output names in order, opset,
                   quantization

KEY are the model's own memory and state keys (see `nmt.models`), so `OnnxModel` returns the same
dicts of batch-first tensors as the PyTorch model and `beam_search` reorders them the same way.
Graph inputs a model does not use (the no-attention LSTM never reads "memory.src_mask") are
dropped by the exporter, so only the inputs a session declares are fed.

Tensors cross between torch and numpy without copies on CPU (`Tensor.numpy`, `torch.from_numpy`).
On a GPU (CUDAExecutionProvider) inputs and outputs still pass through host memory at every step:
binding device buffers (ORT's I/O binding) is not done yet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from torch import Tensor

from nmt.bundle import Bundle
from nmt.errors import BundleError

log = logging.getLogger("nmt.backends.onnx")

EXPORT_DIR = "onnx"  # inside the bundle folder
ENCODER_FILE, DECODER_FILE, EXPORT_FILE = "encoder.onnx", "decoder.onnx", "export.json"
EXPORT_FORMAT = 1
MEMORY, STATE, NEW_STATE = "memory.", "state.", "new_state."  # graph name prefixes of the seam's dicts

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

TensorDict = dict[str, Tensor]


def _export_command(bundle: Path) -> str:
    return f"nmt export --model {bundle} --format onnx"


def read_export(folder: Path) -> dict[str, Any]:
    """export.json of an export folder, checked to name both graphs, which must exist."""
    meta_file = folder / EXPORT_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        for graph in ("encoder", "decoder"):
            if not (isinstance(meta[graph]["inputs"], list) and isinstance(meta[graph]["outputs"], list)):
                raise TypeError
        version = meta["version"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BundleError(
            f"{meta_file}: unreadable export description ({error.__class__.__name__})"
        ) from None
    if not (version is None or isinstance(version, str)):
        raise BundleError(f"{meta_file}: unreadable export description (version)")
    for name in (ENCODER_FILE, DECODER_FILE):
        if not (folder / name).is_file():
            raise BundleError(f"{folder}: incomplete ONNX export, {name} is missing")
    return meta


def session_options(threads: int | None = None, optimization: str = "all") -> ort.SessionOptions:
    """Options for both sessions. `threads` (intra-op) defaults to PyTorch's thread count, so both
    backends honour OMP_NUM_THREADS alike; ONNX Runtime's own default is every physical core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # the graphs are one chain of ops: nothing to run side by side
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.log_severity_level = 3  # errors only: warnings would interleave with the CLI's output
    return options


def providers_for(device: torch.device) -> list[str]:
    """CUDA when asked for and this onnxruntime build has it, else the CPU."""
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); using the CPU")
    return ["CPUExecutionProvider"]


class OnnxModel:
    """`encode` / `decode_step` over ONNX Runtime sessions of an export folder.

    device: where the returned tensors live (and which execution provider runs, see `providers_for`);
    threads: intra-op threads of each session; optimization: ONNX Runtime's graph optimization level
    ("disable", "basic", "extended", "all"), applied when the sessions load the plain ONNX files.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        optimization: str = "all",
    ) -> None:
        self.folder = Path(folder)
        self.meta = read_export(self.folder)
        self.device = torch.device(device)
        self.providers = providers_for(self.device)
        options = session_options(threads, optimization)
        self.encoder = self._session(ENCODER_FILE, options)
        self.decoder = self._session(DECODER_FILE, options)
        self._encoder_inputs = [i.name for i in self.encoder.get_inputs()]
        self._decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        self.memory_keys = [n.removeprefix(MEMORY) for n in encoder_outputs if n.startswith(MEMORY)]
        self.state_keys = [n.removeprefix(STATE) for n in encoder_outputs if n.startswith(STATE)]
        self._encoder_outputs = [MEMORY + k for k in self.memory_keys] + [STATE + k for k in self.state_keys]
        self._decoder_outputs = ["log_probs"] + [NEW_STATE + k for k in self.state_keys]
        declared = {o.name for o in self.decoder.get_outputs()}
        if not set(self._decoder_outputs) <= declared:
            raise BundleError(f"{self.folder}: the decoder graph's outputs do not match the encoder's state")

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: str | torch.device = "cpu", **kwargs: Any) -> OnnxModel:
        """The export in BUNDLE/onnx/, refused unless it was made from this very bundle version."""
        folder = bundle.path / EXPORT_DIR
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
        try:
            return ort.InferenceSession(str(self.folder / name), options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own classes for unreadable or invalid graphs
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BundleError(f"{self.folder / name}: ONNX Runtime cannot load it ({first_line})") from None

    def _run(
        self, session: ort.InferenceSession, inputs: list[str], outputs: list[str], tensors: TensorDict
    ) -> TensorDict:
        """Feed the named inputs (zero-copy views of CPU tensors), fetch `outputs` as torch tensors."""
        feed = {name: tensors[name].detach().cpu().contiguous().numpy() for name in inputs}
        results = session.run(outputs, feed)
        return {
            name: torch.from_numpy(array).to(self.device)
            for name, array in zip(outputs, results, strict=True)
        }

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[TensorDict, TensorDict]:
        """src (B, S), src_lengths (B,) -> (memory, state), with the PyTorch model's keys."""
        out = self._run(
            self.encoder,
            self._encoder_inputs,
            self._encoder_outputs,
            {"src": src, "src_lengths": src_lengths},
        )
        memory = {key: out[MEMORY + key] for key in self.memory_keys}
        state = {key: out[STATE + key] for key in self.state_keys}
        return memory, state

    def decode_step(
        self, prev_tokens: Tensor, memory: TensorDict, state: TensorDict
    ) -> tuple[Tensor, TensorDict]:
        """prev_tokens (B,) -> log-probabilities (B, V) float32 and the new state."""
        tensors = {"prev_tokens": prev_tokens}
        tensors.update((MEMORY + key, value) for key, value in memory.items())
        tensors.update((STATE + key, value) for key, value in state.items())
        out = self._run(self.decoder, self._decoder_inputs, self._decoder_outputs, tensors)
        return out["log_probs"], {key: out[NEW_STATE + key] for key in self.state_keys}
