"""Inference engines behind the seam `nmt.models.step.Seq2Seq`.

- the PyTorch model itself (`Bundle.load_model`): the reference, on CPU or GPU;
- `onnx.OnnxModel`: ONNX Runtime sessions over an export made by `nmt.export.onnx`; its graphs
  do the search's per-step chores (state reordering, top-k) themselves;
- `ctranslate2.CTranslate2Model`: CTranslate2 over an export made by `nmt.export.ctranslate2`
  (Transformers only), with a beam search of its own instead of the seam.

`nmt.search.beam_search` drives the first two unchanged: they take and return torch tensors,
batch first, under the same memory and state keys.
"""
