"""CTranslate2 export: the same weights run by CTranslate2 give the same greedy translations as
PyTorch, for every Transformer variant and for a trained tiny bundle through the `nmt` command;
LSTMs, missing exports and exports of another bundle version are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nmt.backends.ctranslate2 import CTranslate2Model
from nmt.bundle import load_bundle
from nmt.ct2_format import EXPORT_DIR, EXPORT_FILE
from nmt.data import collate_source
from nmt.errors import BundleError
from nmt.models import ctranslate2_spec
from nmt.search import beam_search
from nmt.translator import Translator
from tests.conftest import assert_one_line_error, run_nmt
from tests.models.conftest import SRC_VOCAB, TGT_VOCAB, VARIANTS, make_config, make_model

TRANSFORMERS = [name for name, (arch, _) in VARIANTS.items() if arch == "transformer"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vocabulary(size: int) -> list[str]:
    return ["<pad>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(4, size)]


def _greedy(search_model, src, src_lengths, options) -> list[list[int]]:
    return [nbest[0].tokens for nbest in beam_search(search_model, src, src_lengths, options, 64)]


@pytest.mark.parametrize("variant", TRANSFORMERS)
def test_every_transformer_variant_gives_pytorch_greedy_output(variant, tmp_path):
    """Random weights of each variant (pre/post-norm, shared or separate embeddings): a random
    model rarely ends early, so every sentence runs to its length limit, token by token."""
    arch, overrides = VARIANTS[variant]
    cfg = make_config(arch, **overrides)
    model = make_model(cfg)
    tgt_vocab = SRC_VOCAB if cfg.share_embeddings else TGT_VOCAB
    spec = ctranslate2_spec(model, cfg, _vocabulary(SRC_VOCAB), _vocabulary(tgt_vocab))
    spec.validate()
    spec.optimize(quantization="float32")
    spec.save(str(tmp_path))
    generator = torch.Generator().manual_seed(3)
    seqs = [torch.randint(4, SRC_VOCAB, (n,), generator=generator).tolist() for n in (9, 1, 5, 3)]
    src, src_lengths = collate_source(seqs)
    options = make_search(beam_size=1)
    expected = _greedy(model, src, src_lengths, options)
    engine = CTranslate2Model(tmp_path, compute_type="float32")
    for i in range(len(seqs)):  # one at a time: CTranslate2's length limit is one per batch
        got = engine.beam_search(src[i : i + 1, : src_lengths[i]], src_lengths[i : i + 1], options, 64)
        assert got[0][0].tokens == expected[i], f"sentence {i}"


def make_search(**overrides):
    from nmt.config import SearchConfig

    return SearchConfig(**({"max_len_a": 1.0, "max_len_b": 4, "length_penalty": 0.0} | overrides))


@pytest.fixture(scope="module")
def exported(trained_bundles, tmp_path_factory) -> Path:
    """A copy of the tiny Transformer bundle, exported through the `nmt` command."""
    bundle = Path(shutil.copytree(trained_bundles["transformer"], tmp_path_factory.mktemp("ct2") / "bundle"))
    result = run_nmt("export", "--model", str(bundle), "--format", "ctranslate2")
    assert Path(result.stdout.strip()) == bundle / EXPORT_DIR
    return bundle


def test_export_records_the_bundle_and_translates_as_pytorch(exported, tiny_corpus):
    bundle = load_bundle(exported)
    meta = json.loads((exported / EXPORT_DIR / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["version"] == bundle.version and meta["quantization"] is None
    texts = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    greedy = bundle.search.model_copy(update={"beam_size": 1})
    # batches of one: CTranslate2's length limit is one per batch, ours one per sentence
    ours = Translator.from_bundle(bundle, batch_size=1).translate_best(texts, greedy)
    engine = Translator.from_bundle(bundle, backend="ctranslate2", batch_size=1)
    assert engine.translate_best(texts, greedy) == ours
    beam = engine.translate(texts[:4] + [""])  # a different search: only its shape is checked
    assert len(beam) == 5 and beam[-1][0].text == "" and all(len(nbest) == 1 for nbest in beam)


def test_workers_get_a_replica_each_and_the_same_translations(exported, tiny_corpus):
    """Two workers decode two batches at once on two CTranslate2 replicas (one serves one call
    at a time), with the translations of one."""
    bundle = load_bundle(exported)
    texts = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    expected = Translator.from_bundle(bundle, backend="ctranslate2", batch_size=2).translate_best(texts)
    parallel = Translator.from_bundle(bundle, backend="ctranslate2", batch_size=2, workers=2)
    assert parallel.model.translator.num_translators == 2  # type: ignore[union-attr]
    assert parallel.translate_best(texts) == expected


def test_int8_export_translates(exported, tmp_path):
    bundle = Path(shutil.copytree(exported, tmp_path / "bundle"))
    run_nmt("export", "--model", str(bundle), "--format", "ctranslate2", "--quantize", "int8")
    assert json.loads((bundle / EXPORT_DIR / EXPORT_FILE).read_text())["quantization"] == "int8"
    translator = Translator.from_bundle(load_bundle(bundle), backend="ctranslate2")
    assert all(isinstance(text, str) for text in translator.translate_best(["A dog runs.", "Two men."]))


def test_lstm_export_is_a_one_line_error(trained_bundles, tmp_path):
    for arch in ("lstm", "lstm_attention"):
        bundle = shutil.copytree(trained_bundles[arch], tmp_path / arch)
        result = run_nmt("export", "--model", str(bundle), "--format", "ctranslate2", check=False)
        assert_one_line_error(result, "supports the Transformer only", repr(arch))
        assert not (Path(bundle) / EXPORT_DIR).exists()


def test_missing_or_foreign_export_is_refused(trained_bundles, exported, tmp_path):
    bundle = Path(shutil.copytree(trained_bundles["transformer"], tmp_path / "bundle"))
    with pytest.raises(
        BundleError, match="no CTranslate2 export; run nmt export .* --format ctranslate2 first"
    ):
        CTranslate2Model.from_bundle(load_bundle(bundle))
    shutil.copytree(exported / EXPORT_DIR, bundle / EXPORT_DIR)
    meta_file = bundle / EXPORT_DIR / EXPORT_FILE
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()) | {"version": "0123456789abcdef"}))
    with pytest.raises(BundleError, match="exported from bundle version 0123456789abcdef.*again"):
        CTranslate2Model.from_bundle(load_bundle(bundle))


def test_the_export_made_for_the_shipped_bundle_translates_as_pytorch(multi30k, default_exported):
    from nmt.data import read_lines

    bundle = load_bundle(default_exported)
    texts = read_lines(multi30k / "test_2016_flickr.en.gz")[:16]
    greedy = bundle.search.model_copy(update={"beam_size": 1})
    expected = Translator.from_bundle(bundle, batch_size=1).translate_best(texts, greedy)
    engine = Translator.from_bundle(bundle, backend="ctranslate2", batch_size=1)
    assert engine.translate_best(texts, greedy) == expected
