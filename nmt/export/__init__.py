"""Exports of a model bundle for other runtimes, written beside it in the bundle folder.

- `onnx.export_onnx`: BUNDLE/onnx/ (an encoder graph and a decoder-step graph for ONNX Runtime,
  read by `nmt.backends.onnx.OnnxModel`), any architecture;
- `ctranslate2.export_ctranslate2`: BUNDLE/ct2/ (a CTranslate2 model directory, read by
  `nmt.backends.ctranslate2.CTranslate2Model` or by ctranslate2.Translator itself), Transformers.
"""
