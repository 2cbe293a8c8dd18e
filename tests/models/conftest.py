"""Tiny models of every architecture and one padded batch, shared by the model tests as fixtures.

- `tiny_config(arch, **overrides)`: a tiny config of "transformer", "lstm" or "lstm_attention";
- `tiny_model(cfg)`: a freshly initialised model in eval mode, the same for the same seed;
- `cfg` / `model`: parametrized over every variant in `VARIANTS`;
- `batch`: four sentences of different source and target lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from nmt.config import AttentionLSTMConfig, LSTMConfig, TransformerConfig
from nmt.models import build_model
from nmt.specials import BOS_ID, EOS_ID, PAD_ID

SRC_VOCAB = 37
TGT_VOCAB = 41  # differs from SRC_VOCAB unless the config shares one vocabulary

ModelCfg = TransformerConfig | LSTMConfig | AttentionLSTMConfig

# embed_dim != hidden_size, so tying the RNN output layer to the embedding needs the pre-output projection
_RNN = {"embed_dim": 16, "hidden_size": 24, "layers": 2, "dropout": 0.3}
_DEFAULTS: dict[str, tuple[type, dict[str, Any]]] = {
    "transformer": (
        TransformerConfig,
        {"d_model": 32, "heads": 4, "ff_dim": 48, "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.1}
        | {"attention_dropout": 0.1, "max_positions": 64},
    ),
    "lstm": (LSTMConfig, _RNN),
    "lstm_attention": (AttentionLSTMConfig, _RNN),
}


def make_config(arch: str, **overrides: Any) -> ModelCfg:
    cls, defaults = _DEFAULTS[arch]
    return cls(arch=arch, **(defaults | overrides))


def make_model(cfg: ModelCfg, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shared = isinstance(cfg, TransformerConfig) and cfg.share_embeddings
    return build_model(cfg, SRC_VOCAB, SRC_VOCAB if shared else TGT_VOCAB).eval()


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "transformer-prenorm-shared": ("transformer", {"pre_norm": True, "share_embeddings": True}),
    "transformer-prenorm-separate": ("transformer", {"pre_norm": True, "share_embeddings": False}),
    "transformer-postnorm-shared": ("transformer", {"pre_norm": False, "share_embeddings": True}),
    "transformer-postnorm-separate": ("transformer", {"pre_norm": False, "share_embeddings": False}),
    "lstm-context": ("lstm", {"context_every_step": True}),
    "lstm-plain": ("lstm", {"context_every_step": False}),
    "lstm-unidirectional-untied": ("lstm", {"bidirectional": False, "tie_embeddings": False, "layers": 1}),
    "bahdanau-feed": ("lstm_attention", {"attention": "bahdanau", "input_feeding": True}),
    "bahdanau-nofeed": ("lstm_attention", {"attention": "bahdanau", "input_feeding": False}),
    "luong_dot-feed": ("lstm_attention", {"attention": "luong_dot", "input_feeding": True}),
    "luong_dot-nofeed": ("lstm_attention", {"attention": "luong_dot", "input_feeding": False}),
    "luong_dot-unidirectional-untied": (
        "lstm_attention",
        {"attention": "luong_dot", "bidirectional": False, "tie_embeddings": False},
    ),
    "luong_general-feed": ("lstm_attention", {"attention": "luong_general", "input_feeding": True}),
    "luong_general-nofeed": ("lstm_attention", {"attention": "luong_general", "input_feeding": False}),
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
