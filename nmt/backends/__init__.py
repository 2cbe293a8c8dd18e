"""Inference engines behind the `encode` / `decode_step` seam (see `nmt.models`).

- the PyTorch model itself (`Bundle.load_model`): the reference, on CPU or GPU;
- `onnx.OnnxModel`: ONNX Runtime sessions over an export made by `nmt.export.onnx`.

`nmt.search.beam_search` drives any of them unchanged: each takes and returns torch tensors,
batch first, under the same memory and state keys.
"""
