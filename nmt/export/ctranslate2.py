"""Export a Transformer bundle to CTranslate2: the same weights, run by CTranslate2's own engine.

`export_ctranslate2(bundle)` writes BUNDLE/ct2/ (read by `nmt.backends.ctranslate2`):

    model.bin, config.json, *vocabulary.json   a CTranslate2 model directory, loadable as it is
                                               with ctranslate2.Translator(BUNDLE/ct2)
    export.json                                the bundle's version, the converter's versions

The model is described with CTranslate2's Python spec API (`TransformerSpec`) and filled from
the PyTorch modules, the way CTranslate2's own OpenNMT-py and fairseq converters do it:
- pre-norm (a LayerNorm before each sublayer and a final one on each stack) or post-norm;
- the query/key/value projections fused into one matrix for self-attention, key/value for
  cross-attention, as CTranslate2 stores them;
- embeddings multiplied by sqrt(d_model), then our position table added: it is given explicitly
  (`position_encodings.encodings`), because ours interleaves sin and cos where CTranslate2's
  default table puts all the sines first;
- LayerNorm epsilon PyTorch's 1e-5 (CTranslate2 assumes 1e-6 when none is given);
- the vocabulary is the SentencePiece pieces in id order, so ids map one to one; the specials
  keep their fixed ids (pad 0, unk 1, bos 2, eos 3) and names.
The weights are stored in float32 (or int8 with `quantize="int8"`); CTranslate2 converts them to
the compute type asked for when the model is loaded (`ctranslate2.Translator(...,
compute_type="int8")`), so one float32 export serves both.

Only the Transformer exists in CTranslate2; a recurrent bundle is refused with a one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmt.bundle import Bundle
from nmt.checkpoint import atomic_folder
from nmt.config import TransformerConfig
from nmt.ct2_format import EXPORT_DIR, EXPORT_FILE, EXPORT_FORMAT
from nmt.errors import NmtError
from nmt.models import TransformerSeq2Seq
from nmt.tokenizer import Tokenizer

QUANTIZATIONS = ("int8",)
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which the models use


class CTranslate2ExportError(NmtError):
    """The bundle cannot be expressed as a CTranslate2 model."""


def _array(tensor: torch.Tensor) -> Any:
    return tensor.detach().to(torch.float32).cpu().numpy()


def _linear(spec: Any, layer: Any) -> None:
    spec.weight = _array(layer.weight)
    if layer.bias is not None:
        spec.bias = _array(layer.bias)


def _fused(spec: Any, layers: list[nn.Linear]) -> None:
    """Several projections of one input as one matrix (their outputs concatenated)."""
    spec.weight = _array(torch.cat([layer.weight for layer in layers]))
    spec.bias = _array(torch.cat([layer.bias for layer in layers]))


def _norm(spec: Any, norm: Any) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _attention(spec: Any, attention: Any, norm: Any, self_attention: bool) -> None:
    if self_attention:
        _fused(spec.linear[0], [attention.q, attention.k, attention.v])
    else:
        _linear(spec.linear[0], attention.q)
        _fused(spec.linear[1], [attention.k, attention.v])
    _linear(spec.linear[-1], attention.out)
    _norm(spec.layer_norm, norm)


def _ffn(spec: Any, ff: Any, norm: Any) -> None:
    _linear(spec.linear_0, ff[0])
    _linear(spec.linear_1, ff[3])
    _norm(spec.layer_norm, norm)


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's pieces in id order."""
    processor = tokenizer.processor
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def build_spec(
    model: TransformerSeq2Seq, cfg: TransformerConfig, vocab_src: list[str], vocab_tgt: list[str]
) -> Any:
    """The CTranslate2 `TransformerSpec` of `model`, with its weights and vocabularies (the pieces
    in id order; the first four must be the specials)."""
    from ctranslate2.specs import common_spec, transformer_spec

    encoder = transformer_spec.TransformerEncoderSpec(
        cfg.encoder_layers, cfg.heads, pre_norm=cfg.pre_norm, activation=common_spec.Activation.RELU
    )
    decoder = transformer_spec.TransformerDecoderSpec(
        cfg.decoder_layers, cfg.heads, pre_norm=cfg.pre_norm, activation=common_spec.Activation.RELU
    )
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    special = {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>"}
    for vocab in (vocab_src, vocab_tgt):
        if {i: vocab[i] for i in special} != special:
            raise CTranslate2ExportError(
                f"the tokenizer's special pieces are {vocab[:4]}, expected {list(special.values())}"
            )
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = "<unk>", "<s>", "</s>"
    spec.config.decoder_start_token = "<s>"

    positions = _array(model.positions)
    encoder.embeddings[0].weight = _array(model.src_embed.weight)
    encoder.position_encodings.encodings = positions
    encoder.scale_embeddings = True
    for layer_spec, layer in zip(encoder.layer, model.encoder_layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_norm, self_attention=True)
        _ffn(layer_spec.ffn, layer.ff, layer.ff_norm)
    decoder.embeddings.weight = _array(model.tgt_embed.weight)
    decoder.position_encodings.encodings = positions
    decoder.scale_embeddings = True
    for layer_spec, layer in zip(decoder.layer, model.decoder_layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_norm, self_attention=True)
        _attention(layer_spec.attention, layer.cross_attn, layer.cross_norm, self_attention=False)
        _ffn(layer_spec.ffn, layer.ff, layer.ff_norm)
    if cfg.pre_norm:
        _norm(encoder.layer_norm, model.encoder_norm)
        _norm(decoder.layer_norm, model.decoder_norm)
    _linear(decoder.projection, model.output)
    spec.register_source_vocabulary(vocab_src)
    spec.register_target_vocabulary(vocab_tgt)
    return spec


def export_ctranslate2(bundle: Bundle, quantize: str | None = None) -> Path:
    """Export the bundle's Transformer into BUNDLE/ct2/, replacing an earlier export; returns it.

    quantize: None stores float32 weights, "int8" int8 ones (a smaller file; CTranslate2 then
    computes in int8 unless asked otherwise at load time). Written to a temporary folder beside
    it and renamed into place, as the ONNX export is."""
    import ctranslate2

    if quantize not in (None, *QUANTIZATIONS):
        raise CTranslate2ExportError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
    cfg = bundle.model_config
    if not isinstance(cfg, TransformerConfig):
        raise CTranslate2ExportError(
            f"{bundle.path}: --format ctranslate2 supports the Transformer only, "
            f"this bundle is {cfg.architecture!r} (use --format onnx)"
        )
    model = bundle.load_model("cpu")
    assert isinstance(model, TransformerSeq2Seq)
    spec = build_spec(model, cfg, vocabulary(bundle.src_tokenizer), vocabulary(bundle.tgt_tokenizer))
    spec.validate()
    spec.optimize(quantization=quantize or "float32")

    def fill(folder: Path) -> None:
        spec.save(str(folder))
        meta = {
            "format": EXPORT_FORMAT,
            "version": bundle.version,
            "model": type(model).__name__,
            "quantization": quantize,
            "exporter": {"torch": torch.__version__, "ctranslate2": ctranslate2.__version__},
        }
        (folder / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return atomic_folder(bundle.path / EXPORT_DIR, fill)
