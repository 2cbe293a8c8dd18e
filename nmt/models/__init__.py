"""The three model families (recurrent without and with attention, each with an LSTM, GRU or
Elman RNN cell; the Transformer) behind one seam, and `build_model`, which picks one from its config.

Every model is a `Seq2SeqModel` (see `nmt.models.step`, the typed seam) and offers
(B batch, S source length, T target length, V target vocabulary):
- ``forward(src (B, S), src_lengths (B,), tgt_in (B, T)) -> logits (B, T, V)``: teacher forcing;
  src is right-padded with PAD and ends with EOS, tgt_in = [BOS, y1, ..., yn] right-padded.
- ``encode(src, src_lengths) -> (memory, state)``: memory holds what stays fixed while decoding a
  sentence (always "src_mask" (B, S), True = real token); state what changes at every step.
- ``decode_step(prev_tokens (B,), memory, state) -> (log_probs (B, V) float32, new_state)``.
Every tensor in memory and state has the batch on dim 0, so a search reorders beams or drops
finished sentences with ``index_select(0, idx)`` on each of them. The key sets are listed in each
class's docstring and are fixed for a given config.

Code outside this package asks the model (`Seq2SeqModel`) and its config (`nmt.config`: position
limit, export formats), never its class: `build_model` and `ctranslate2_spec` are the only
places that pick by architecture.
"""

from __future__ import annotations

from typing import Any

from nmt.config import AnyModelConfig, AttentionRNNConfig, RNNConfig, TransformerConfig
from nmt.models.ct2_spec import CTranslate2SpecError, build_spec
from nmt.models.rnn import AttentionRNNSeq2Seq, RNNSeq2Seq
from nmt.models.step import Seq2Seq, Seq2SeqModel
from nmt.models.transformer import TransformerSeq2Seq

__all__ = [
    "AttentionRNNSeq2Seq",
    "CTranslate2SpecError",
    "RNNSeq2Seq",
    "Seq2Seq",
    "Seq2SeqModel",
    "TransformerSeq2Seq",
    "build_model",
    "ctranslate2_spec",
]


def build_model(cfg: AnyModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqModel:
    """The model described by `cfg` (the recipe's `model` section), freshly initialised."""
    match cfg:
        case TransformerConfig():
            return TransformerSeq2Seq(cfg, src_vocab_size, tgt_vocab_size)
        case RNNConfig():
            return RNNSeq2Seq(cfg, src_vocab_size, tgt_vocab_size)
        case AttentionRNNConfig():
            return AttentionRNNSeq2Seq(cfg, src_vocab_size, tgt_vocab_size)
    raise TypeError(f"not a model config: {type(cfg).__name__}")


def ctranslate2_spec(
    model: Seq2SeqModel, cfg: AnyModelConfig, vocab_src: list[str], vocab_tgt: list[str]
) -> Any:
    """The CTranslate2 model spec of `model` (built from `cfg`), with its weights and vocabularies
    (pieces in id order), for a model whose config lists "ctranslate2" in `export_formats`."""
    match model, cfg:
        case TransformerSeq2Seq(), TransformerConfig():
            return build_spec(model, cfg, vocab_src, vocab_tgt)
    raise CTranslate2SpecError(f"CTranslate2 has no {cfg.architecture!r} model (use --format onnx)")
