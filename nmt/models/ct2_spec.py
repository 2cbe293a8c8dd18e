"""The Transformer as CTranslate2 describes it: its `TransformerSpec`, filled from the modules.

CTranslate2 runs Transformers only, so this mapping is the model's, not the exporter's:
`nmt.export.ctranslate2` asks `nmt.models.ctranslate2_spec` for it and saves it. The mapping
follows CTranslate2's own OpenNMT-py and fairseq converters:
- pre-norm (a LayerNorm before each sublayer and a final one on each stack) or post-norm;
- the query/key/value projections fused into one matrix for self-attention, key/value for
  cross-attention, as CTranslate2 stores them;
- embeddings multiplied by sqrt(d_model), then our position table added: it is given explicitly
  (`position_encodings.encodings`), because ours interleaves sin and cos where CTranslate2's
  default table puts all the sines first;
- LayerNorm epsilon PyTorch's 1e-5 (CTranslate2 assumes 1e-6 when none is given);
- the vocabularies are the SentencePiece pieces in id order, so ids map one to one; the
  specials keep their fixed ids (pad 0, unk 1, bos 2, eos 3) and names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nmt.config import TransformerConfig
from nmt.errors import NmtError
from nmt.models.transformer import TransformerSeq2Seq

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which the models use


class CTranslate2SpecError(NmtError):
    """The model cannot be expressed as a CTranslate2 model."""


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
            raise CTranslate2SpecError(
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
