"""Tiny models of every architecture and one padded batch, shared by the model tests as fixtures.

- `tiny_config(arch, **overrides)`: a tiny config of "transformer", "rnn" or "rnn_attention" (LSTM
  cells unless `cell` says otherwise);
- `tiny_model(cfg)`: a freshly initialised model in eval mode, the same for the same seed;
- `cfg` / `model`: parametrized over every variant in `VARIANTS` (every recurrent one for each cell);
- `batch`: four sentences of different source and target lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from nmt.config import AttentionRNNConfig, RNNConfig, TransformerConfig
from nmt.models import build_model
from nmt.specials import BOS_ID, EOS_ID, PAD_ID

SRC_VOCAB = 37
TGT_VOCAB = 41  # differs from SRC_VOCAB unless the config shares one vocabulary

ModelCfg = TransformerConfig | RNNConfig | AttentionRNNConfig

# embed_dim != hidden_size, so tying the RNN output layer to the embedding needs the pre-output projection
_RNN = {"embed_dim": 16, "hidden_size": 24, "layers": 2, "dropout": 0.3}
_DEFAULTS: dict[str, tuple[type, dict[str, Any]]] = {
    "transformer": (
        TransformerConfig,
        {"d_model": 32, "heads": 4, "ff_dim": 48, "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.1}
        | {"attention_dropout": 0.1, "max_positions": 64},
    ),
    "rnn": (RNNConfig, _RNN),
    "rnn_attention": (AttentionRNNConfig, _RNN),
}


def make_config(arch: str, **overrides: Any) -> ModelCfg:
    cls, defaults = _DEFAULTS[arch]
    return cls(arch=arch, **(defaults | overrides))


def make_model(cfg: ModelCfg, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shared = isinstance(cfg, TransformerConfig) and cfg.share_embeddings
    return build_model(cfg, SRC_VOCAB, SRC_VOCAB if shared else TGT_VOCAB).eval()


CELLS = ("lstm", "gru", "rnn")


def _recurrent_variants(cell: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The recurrent variants with one cell: without attention and with each score, uni- and
    bidirectional encoders, with and without input feeding, tied and untied output layers."""
    uni = {"bidirectional": False, "tie_embeddings": False}
    variants: dict[str, tuple[str, dict[str, Any]]] = {
        "context": ("rnn", {"context_every_step": True}),
        "plain": ("rnn", {"context_every_step": False}),
        "unidirectional-untied": ("rnn", {**uni, "layers": 1}),
        "bahdanau-feed": ("rnn_attention", {"attention": "bahdanau", "input_feeding": True}),
        "bahdanau-nofeed": ("rnn_attention", {"attention": "bahdanau", "input_feeding": False}),
        "bahdanau-unidirectional-untied": ("rnn_attention", {"attention": "bahdanau", **uni, "layers": 1}),
        "luong_dot-feed": ("rnn_attention", {"attention": "luong_dot", "input_feeding": True}),
        "luong_dot-nofeed": ("rnn_attention", {"attention": "luong_dot", "input_feeding": False}),
        "luong_dot-unidirectional-untied": ("rnn_attention", {"attention": "luong_dot", **uni}),
        "luong_general-feed": ("rnn_attention", {"attention": "luong_general", "input_feeding": True}),
        "luong_general-nofeed": ("rnn_attention", {"attention": "luong_general", "input_feeding": False}),
    }
    return {f"{cell}-{name}": (arch, {"cell": cell, **options}) for name, (arch, options) in variants.items()}


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "transformer-prenorm-shared": ("transformer", {"pre_norm": True, "share_embeddings": True}),
    "transformer-prenorm-separate": ("transformer", {"pre_norm": True, "share_embeddings": False}),
    "transformer-postnorm-shared": ("transformer", {"pre_norm": False, "share_embeddings": True}),
    "transformer-postnorm-separate": ("transformer", {"pre_norm": False, "share_embeddings": False}),
    **{name: variant for cell in CELLS for name, variant in _recurrent_variants(cell).items()},
}


@pytest.fixture
def tiny_config() -> Callable[..., ModelCfg]:
    return make_config


@pytest.fixture
def tiny_model() -> Callable[..., nn.Module]:
    return make_model


@pytest.fixture(params=list(VARIANTS))
def cfg(request: pytest.FixtureRequest) -> ModelCfg:
    arch, overrides = VARIANTS[request.param]
    return make_config(arch, **overrides)


@pytest.fixture
def model(cfg: ModelCfg) -> nn.Module:
    return make_model(cfg)


@dataclass
class Batch:
    src: Tensor  # (B, S), right-padded, each row ends with EOS
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T) = [BOS, y1, ..., yn], right-padded
    tgt_out: Tensor  # (B, T) = [y1, ..., yn, EOS], right-padded
    tgt_mask: Tensor  # (B, T) True at real target positions


def make_batch(src_lengths: list[int], tgt_lengths: list[int], seed: int = 0) -> Batch:
    """Random non-special tokens with the given lengths (EOS included)."""
    generator = torch.Generator().manual_seed(seed)
    size = len(src_lengths)
    src = torch.full((size, max(src_lengths)), PAD_ID)
    tgt_in = torch.full((size, max(tgt_lengths)), PAD_ID)
    tgt_out = tgt_in.clone()
    for row, (s, t) in enumerate(zip(src_lengths, tgt_lengths, strict=True)):
        src[row, : s - 1] = torch.randint(4, SRC_VOCAB, (s - 1,), generator=generator)
        src[row, s - 1] = EOS_ID
        words = torch.randint(4, SRC_VOCAB, (t - 1,), generator=generator)
        tgt_in[row, :t] = torch.cat([torch.tensor([BOS_ID]), words])
        tgt_out[row, :t] = torch.cat([words, torch.tensor([EOS_ID])])
    return Batch(src, torch.tensor(src_lengths), tgt_in, tgt_out, tgt_out != PAD_ID)


@pytest.fixture
def batch() -> Batch:
    """Four sentences of different source and target lengths; the second source is EOS alone."""
    return make_batch(src_lengths=[7, 1, 5, 3], tgt_lengths=[5, 8, 3, 6])
