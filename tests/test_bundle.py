"""Bundles: save and load round trip, fp16 storage, the content-hash version."""

from __future__ import annotations

import json

import pytest
import torch

from nmt.bundle import load_bundle, save_bundle
from nmt.config import SearchConfig, TokenizerConfig, TransformerConfig
from nmt.errors import BundleError
from nmt.models import build_model
from nmt.tokenizer import train_tokenizers


@pytest.fixture(scope="module")
def parts(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    texts = (tiny_corpus / "train.en").read_text().splitlines() + (
        tiny_corpus / "train.de"
    ).read_text().splitlines()
    src_tok, tgt_tok = train_tokenizers(
        TokenizerConfig(vocab_size=300), texts[:400], texts[400:], folder, "en", "de"
    )
    cfg = TransformerConfig(
        arch="transformer", d_model=32, heads=2, ff_dim=64, encoder_layers=1, decoder_layers=1
    )
    torch.manual_seed(0)
    model = build_model(cfg, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    return model, cfg, src_tok, tgt_tok


def _save(path, parts, **kwargs):
    model, cfg, src_tok, tgt_tok = parts
    meta = {"name": "t", "src_lang": "en", "tgt_lang": "de"}
    return save_bundle(path, model, cfg, src_tok, tgt_tok, SearchConfig(beam_size=3), meta, **kwargs)


def _logits(model, vocab):
    src = torch.randint(4, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(4, vocab, (2, 5), generator=torch.Generator().manual_seed(2))
    return model(src, torch.tensor([7, 5]), tgt)


def test_round_trip_gives_the_same_model(parts, tmp_path):
    bundle = load_bundle(_save(tmp_path / "b", parts))
    assert bundle.search.beam_size == 3 and bundle.src_lang == "en"
    assert bundle.meta["parameters"] == sum(p.numel() for p in parts[0].parameters())
    loaded = bundle.load_model()
    vocab = parts[2].vocab_size
    assert torch.equal(_logits(parts[0], vocab), _logits(loaded, vocab))
    # shared embeddings stay shared after loading
    assert loaded.tgt_embed.weight.data_ptr() == loaded.src_embed.weight.data_ptr()


def test_fp16_storage_is_half_the_size_and_close(parts, tmp_path):
    full = _save(tmp_path / "full", parts)
    half = _save(tmp_path / "half", parts, dtype="float16")
    size = lambda p: (p / "weights.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = load_bundle(half).load_model()
    assert next(loaded.parameters()).dtype == torch.float32
    vocab = parts[2].vocab_size
    assert torch.allclose(_logits(parts[0], vocab), _logits(loaded, vocab), atol=5e-2)
    assert load_bundle(half).version != load_bundle(full).version


def test_version_tracks_content(parts, tmp_path):
    path = _save(tmp_path / "b", parts)
    version = load_bundle(path).version
    again = _save(tmp_path / "again", parts)
    assert load_bundle(again).version == version
    meta = json.loads((path / "bundle.json").read_text())
    meta["model"]["dropout"] = 0.5  # a config that no longer matches the weights' hash
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="version"):
        load_bundle(path)


def test_saving_over_a_bundle_replaces_it_whole(parts, tmp_path):
    path = _save(tmp_path / "b", parts)
    (path / "stray.txt").write_text("old")
    _save(path, parts)
    assert not (path / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
