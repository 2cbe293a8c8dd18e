"""Bundles: save and load round trip, fp16 storage, the content-hash version, and every file a
bundle names kept inside its folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nmt.backends.ctranslate2 import CTranslate2Model
from nmt.backends.onnx import OnnxModel
from nmt.bundle import WEIGHTS_FILE, content_hash, load_bundle, save_bundle
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


def _name_tokenizer(path, name) -> None:
    """Point both tokenizer keys of bundle.json at `name` (both: the version then still matches
    when `name` holds the same bytes, see below)."""
    meta = json.loads((path / "bundle.json").read_text())
    meta["tokenizer"] = {"src": name, "tgt": name}
    (path / "bundle.json").write_text(json.dumps(meta))


def _never(*args, **kwargs):
    raise AssertionError("a file was read before the bundle's names were checked")


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_a_tokenizer_outside_the_bundle_is_refused(parts, tmp_path, monkeypatch, how):
    path = _save(tmp_path / "b", parts)
    outside = tmp_path / "outside.model"
    shutil.copyfile(path / "spm.model", outside)  # the same bytes as the bundle's own tokenizer
    name = {"parent": "../outside.model", "absolute": str(outside), "symlink": "link.model"}[how]
    if how == "symlink":
        (path / "link.model").symlink_to(outside)
    _name_tokenizer(path, name)
    meta = json.loads((path / "bundle.json").read_text())
    # the content hash covers bytes, not names: it would have let this bundle through
    assert content_hash(path, [WEIGHTS_FILE, name, name], meta["model"]) == meta["version"]
    monkeypatch.setattr("nmt.bundle.content_hash", _never)
    monkeypatch.setattr("nmt.bundle.Tokenizer.load", _never)
    for verify in (True, False):
        with pytest.raises(BundleError, match="tokenizer.src") as caught:
            load_bundle(path, verify=verify)
        assert name in str(caught.value) and "outside the bundle" in str(caught.value)


@pytest.mark.parametrize("name", [None, 5, "", "spm\0.model"])
def test_a_tokenizer_name_that_is_no_file_name_is_refused(parts, tmp_path, name):
    path = _save(tmp_path / "b", parts)
    _name_tokenizer(path, name)
    with pytest.raises(BundleError, match="tokenizer.src"):
        load_bundle(path)


def test_weights_linked_from_outside_are_refused(parts, tmp_path):
    path = _save(tmp_path / "b", parts)
    (path / WEIGHTS_FILE).rename(tmp_path / "elsewhere.safetensors")
    (path / WEIGHTS_FILE).symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(BundleError, match="weights 'weights.safetensors' resolves to .*elsewhere"):
        load_bundle(path)


def test_links_that_stay_inside_the_bundle_are_fine(parts, tmp_path):
    path = _save(tmp_path / "b", parts)
    version = load_bundle(path).version
    (path / "sub").mkdir()
    (path / "sub" / "link.model").symlink_to(path / "spm.model")
    _name_tokenizer(path, "sub/link.model")
    assert load_bundle(path).version == version
    linked = tmp_path / "linked"  # the bundle folder itself may be a link (models/current -> v3)
    linked.symlink_to(path)
    assert load_bundle(linked).version == version


@pytest.mark.parametrize(("backend", "folder"), [(OnnxModel, "onnx"), (CTranslate2Model, "ct2")])
def test_an_export_linked_from_outside_is_refused(parts, tmp_path, backend, folder):
    bundle = load_bundle(_save(tmp_path / "b", parts))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "export.json").write_text("{}")
    (bundle.path / folder).mkdir()
    (bundle.path / folder / "export.json").symlink_to(tmp_path / "elsewhere" / "export.json")
    with pytest.raises(BundleError, match=f"{folder} export '{folder}/export.json' resolves"):
        backend.from_bundle(bundle)
    shutil.rmtree(bundle.path / folder)
    (bundle.path / folder).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleError, match=f"{folder} export '{folder}' resolves"):
        backend.from_bundle(bundle)
