"""Exports of a model bundle for other runtimes, written beside it in the bundle folder.

- `onnx.export_onnx`: BUNDLE/onnx/ (an encoder graph and a decoder-step graph for ONNX Runtime,
  read by `nmt.backends.onnx.OnnxModel`).
"""
