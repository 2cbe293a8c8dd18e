"""Vocabulary shortlists: built from a corpus, stored in the bundle and checked against it, and
decoded with by every engine (PyTorch, ONNX Runtime, CTranslate2), which agree with each other
and stay close to the full vocabulary."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from nmt.backends.onnx import OnnxModel
from nmt.bundle import load_bundle
from nmt.data import collate_source, read_lines
from nmt.errors import BundleError, DataError
from nmt.export import onnx as onnx_export
from nmt.export.onnx import export_onnx
from nmt.metrics import bleu_only
from nmt.search import BANNED_IDS, outside_sample
from nmt.shortlist import (
    ALIGN,
    FILE,
    SPECIALS,
    build_shortlist,
    load_shortlist,
    read_shortlist,
    require_shortlist,
    save_shortlist,
    shortlist_for_bundle,
)
from nmt.specials import EOS_ID
from nmt.translator import Translator
from tests.conftest import DEFAULT_BUNDLE, assert_one_line_error, run_benchmark, run_nmt

SHIPPED = ["transformer-en-de", "lstm-attention-en-de", "lstm-en-de", "transformer-en-de-student"]
MULTILINGUAL = "transformer-en-de-fr"  # the shipped six-direction bundle


def _copy(bundle: Path, folder: Path) -> Path:
    return Path(shutil.copytree(bundle, folder / bundle.name))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shortlisted(trained_bundles, tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """A copy of each tiny bundle with a shortlist of the tiny corpus and an fp32 ONNX export."""
    bundles = {}
    for arch, path in trained_bundles.items():
        bundles[arch] = _copy(path, tmp_path_factory.mktemp(f"shortlist-{arch}"))
        run_nmt(
            "shortlist", "--model", str(bundles[arch]), "--src", str(tiny_corpus / "train.en"),
            "--tgt", str(tiny_corpus / "train.de"), "--k", "5", "--frequent", "20",
        )  # fmt: skip
        export_onnx(load_bundle(bundles[arch]))
    return bundles


# -- building ---------------------------------------------------------------------------------


def test_rows_rank_by_dice_and_keep_k_and_the_frequent_tokens():
    # target 7 follows source 5 everywhere; 9 is in every target sentence (frequent, but no
    # better a translation of 5 than of anything else); 8 goes with 6
    src = [[5, 6], [5], [5, 6], [6]]
    tgt = [[7, 9, 8], [7, 9], [7, 9, 8], [9, 8]]
    chunks = [(src[:2], tgt[:2]), (src[2:], tgt[2:])]  # counted chunk by chunk, merged
    shortlist = build_shortlist(chunks, 10, 12, k=2, frequent=1, meta={"corpus": "hand-made"})
    row = lambda s: shortlist.indices[shortlist.indptr[s] : shortlist.indptr[s + 1]].tolist()  # noqa: E731
    assert row(5) == [7, 9] and row(6) == [8, 9]  # Dice: 7 (1.0) before 9 (0.86) for 5; k = 2
    assert row(0) == row(4) == row(9) == []
    assert shortlist.frequent.tolist() == [9]
    assert (
        shortlist.meta["k"] == 2 and shortlist.meta["pairs"] == 4 and shortlist.meta["corpus"] == "hand-made"
    )


def test_copies_put_each_source_id_in_its_own_row_after_its_k_best():
    # one vocabulary on both sides: 5 is a name, copied through; 6 translates into 8
    src, tgt = [[5, 6], [5, 6], [6]], [[5, 8], [5, 8], [8]]
    row = lambda table, s: table.indices[table.indptr[s] : table.indptr[s + 1]].tolist()  # noqa: E731
    plain = build_shortlist([(src, tgt)], 200, 200, k=1, frequent=0)
    copies = build_shortlist([(src, tgt)], 200, 200, k=1, frequent=0, copies=True)
    assert row(plain, 6) == [8] and row(plain, 9) == [] and "copies" not in plain.meta
    assert row(copies, 5) == [5]  # its best is itself: not listed twice
    assert row(copies, 6) == [8, 6] and row(copies, 9) == [9] and row(copies, 199) == [199]
    assert row(copies, 0) == row(copies, 3) == []  # the specials are in every union anyway
    assert copies.meta["copies"] is True
    vocabulary = copies.vocabulary([[150, 160]])
    assert vocabulary is not None and {150, 160} <= set(vocabulary.tolist())
    assert not {150, 160} & set(plain.vocabulary([[150, 160]]).tolist())
    # ids only the larger side has are nobody's copy
    wider = build_shortlist([(src, tgt)], 12, 20, k=1, frequent=0, copies=True)
    assert row(wider, 11) == [11] and wider.indptr.size == 13


def test_nmt_shortlist_copies_records_them_and_the_rows_hold_their_own_ids(trained_bundles, tmp_path):
    bundle = _copy(trained_bundles["transformer"], tmp_path)  # a joint tokenizer, as recipes default to
    corpus = tmp_path / "one"
    corpus.write_text("A man.\n", encoding="utf-8")
    run_nmt("shortlist", "--model", str(bundle), "--src", str(corpus), "--tgt", str(corpus), "--copies")
    shortlist = require_shortlist(load_bundle(bundle))
    assert shortlist.meta["copies"] is True
    rows = [shortlist.indices[shortlist.indptr[i] : shortlist.indptr[i + 1]] for i in range(SPECIALS, 50)]
    assert all(i in row for i, row in zip(range(SPECIALS, 50), rows, strict=True))


def test_copies_need_one_vocabulary_on_both_sides(tmp_path):
    from types import SimpleNamespace

    from nmt.languages import Direction

    def tokenizer(digest: str) -> SimpleNamespace:
        return SimpleNamespace(file_hash=lambda: digest, vocab_size=12)

    direction = Direction("en", "de")
    bundle = SimpleNamespace(
        name="two-vocabularies",
        version="v1",
        directions=[direction],
        translates=lambda d: d == direction,
        language_tokens={},
        src_tokenizer=tokenizer("a"),
        tgt_tokenizer=tokenizer("b"),
    )
    files = (tmp_path / "train.en", tmp_path / "train.de")
    with pytest.raises(DataError, match="a source id is no target id to copy"):
        shortlist_for_bundle(bundle, {direction: files}, copies=True)


def test_ibm1_ranks_a_row_by_what_its_source_token_translates_into():
    # 5 ("dog") always comes with 7 ("Hund"); 6 ("the") with 8 ("der") and also with 7 when 5
    # is there. Dice ranks 7 above 8 for 6 (7 is in more of 6's sentences); IBM model 1 explains
    # 7 by 5 and ranks 8 first for 6
    src = [[6, 5], [6, 5], [6, 5], [6]]
    tgt = [[8, 7], [8, 7], [8, 7], [8]]
    row = lambda table, s: table.indices[table.indptr[s] : table.indptr[s + 1]].tolist()  # noqa: E731
    dice = build_shortlist([(src, tgt)], 10, 12, k=1, frequent=0)
    chunks = [(src[:2], tgt[:2]), (src[2:], tgt[2:])]
    ibm1 = build_shortlist(
        lambda: iter(chunks), 10, 12, k=1, frequent=0, score="ibm1"
    )  # read anew each round
    assert row(dice, 6) == [8] and row(ibm1, 6) == [8] and row(ibm1, 5) == [7]
    assert ibm1.meta["score"] == "ibm1" and ibm1.meta["iterations"] == 5 and ibm1.meta["pairs"] == 4
    # where co-occurrence cannot tell, IBM model 1 can: 9 and 10 always come together
    src, tgt = [[6, 9], [6, 10], [6, 9, 10]], [[8, 11], [8, 12], [8, 11, 12]]
    ibm1 = build_shortlist([(src, tgt)], 13, 13, k=1, frequent=0, score="ibm1")
    assert row(ibm1, 9) == [11] and row(ibm1, 10) == [12] and row(ibm1, 6) == [8]
    with pytest.raises(DataError, match="once per round"):  # a generator would be empty after one
        build_shortlist(iter([(src, tgt)]), 13, 13, score="ibm1")
    with pytest.raises(DataError, match="a score of dice, ibm1"):
        build_shortlist([(src, tgt)], 13, 13, score="counts")


def test_the_vocabulary_is_the_union_with_the_specials_first_padded_to_the_block():
    src, tgt = [[10, 11], [12]], [[100, 101], [102, 103]]
    shortlist = build_shortlist([(src, tgt)], 20, 1000, k=3, frequent=0)
    vocabulary = shortlist.vocabulary(torch.tensor([[10, EOS_ID, 0]]))
    assert vocabulary is not None
    ids = vocabulary.tolist()
    assert ids[:SPECIALS] == [0, 1, 2, 3] and ids == sorted(set(ids)) and len(ids) % ALIGN == 0
    assert {100, 101} <= set(ids) and not {102, 103} & set(ids)  # 12's row is not asked for
    assert len(ids) == ALIGN  # padded with the lowest ids missing
    # a union that would not be smaller than the whole vocabulary is the whole vocabulary
    assert build_shortlist([(src, tgt)], 20, 100, k=3, frequent=90).vocabulary([[10]]) is None


def test_a_shortlist_file_round_trips_byte_for_byte(tmp_path):
    shortlist = build_shortlist([([[5, 6]], [[7, 8]])], 10, 200, k=2, frequent=3, meta={"x": 1})
    first, second = (
        save_shortlist(shortlist, tmp_path / "a.npz"),
        save_shortlist(shortlist, tmp_path / "b.npz"),
    )
    assert first.read_bytes() == second.read_bytes()
    read = read_shortlist(first)
    assert np.array_equal(read.indptr, shortlist.indptr) and np.array_equal(read.indices, shortlist.indices)
    assert np.array_equal(read.frequent, shortlist.frequent) and read.meta == shortlist.meta
    assert len(read.digest) == 16
    (tmp_path / "bad.npz").write_bytes(first.read_bytes()[:100])
    with pytest.raises(BundleError, match="bad.npz: unreadable shortlist"):
        read_shortlist(tmp_path / "bad.npz")


def test_the_normaliser_s_sample_is_evenly_spaced_over_the_ids_outside():
    vocabulary = torch.tensor([0, 1, 2, 3, 10, 11])  # outside, of 20: 4..9 and 12..19, 14 ids
    sample, log_weight = outside_sample(vocabulary, 20, 4)
    assert sample.tolist() == [4, 8, 15, 19] and log_weight == pytest.approx(math.log(14 / 4))
    every, weight_one = outside_sample(vocabulary, 20, 100)  # more than there are: each once
    assert every.tolist() == [4, 5, 6, 7, 8, 9, *range(12, 20)] and weight_one == 0.0
    assert outside_sample(vocabulary, 20, 0)[0].numel() == 0
    assert outside_sample(torch.arange(20), 20, 8)[0].numel() == 0  # nothing outside


def test_the_sample_size_is_recorded_and_a_file_without_it_samples_nothing(trained_bundles, tmp_path):
    shortlist = build_shortlist([([[5, 6]], [[7, 8]])], 10, 200, k=2, frequent=3, outside=64)
    assert read_shortlist(save_shortlist(shortlist, tmp_path / "s.npz")).outside == 64
    older = replace(shortlist, meta={key: v for key, v in shortlist.meta.items() if key != "outside"})
    assert older.outside == 0
    with pytest.raises(DataError, match="outside >= 0"):
        build_shortlist([([[5, 6]], [[7, 8]])], 10, 200, outside=-1)
    bundle = _copy(trained_bundles["lstm"], tmp_path)
    corpus = tmp_path / "one"
    corpus.write_text("A man.\n", encoding="utf-8")
    result = run_nmt(
        "shortlist",
        "--model",
        str(bundle),
        "--src",
        str(corpus),
        "--tgt",
        str(corpus),
        "--outside",
        "-3",
        check=False,
    )
    assert_one_line_error(result, "outside >= 0")


def test_corpora_of_different_lengths_are_refused(trained_bundles, tiny_corpus, tmp_path):
    bundle = load_bundle(trained_bundles["lstm"])
    short = tmp_path / "short.de"
    short.write_text("Ein Mann.\n", encoding="utf-8")
    with pytest.raises(DataError, match="different numbers of lines"):
        shortlist_for_bundle(bundle, {bundle.direction(): (tiny_corpus / "train.en", short)})


# -- stored in the bundle, checked against it ---------------------------------------------------


def test_the_shortlist_leaves_the_bundle_version_alone_and_records_what_it_was_built_for(shortlisted):
    bundle = load_bundle(shortlisted["transformer"])  # verified: the version hashes what it did
    shortlist = require_shortlist(bundle)
    assert shortlist.meta["bundle_version"] == bundle.version
    assert shortlist.meta["tgt_tokenizer_sha256"] == bundle.tgt_tokenizer.file_hash()
    assert shortlist.meta["k"] == 5 and shortlist.meta["frequent"] == 20 and shortlist.meta["pairs"] == 400


def test_a_shortlist_of_another_bundle_or_vocabulary_is_refused_in_one_line(shortlisted, tmp_path):
    bundle_path = _copy(shortlisted["lstm"], tmp_path)
    other = require_shortlist(load_bundle(shortlisted["transformer"]))  # another version, same vocabulary
    save_shortlist(other, bundle_path / FILE)
    with pytest.raises(BundleError, match=f"{FILE}: built for bundle version") as error:
        load_shortlist(load_bundle(bundle_path))
    assert "\n" not in str(error.value) and "nmt shortlist" in str(error.value)
    result = run_nmt("translate", "--model", str(bundle_path), "--shortlist", stdin="A man.\n", check=False)
    assert_one_line_error(result, FILE, "bundle version")
    from serving.registry import _translator
    from serving.settings import Settings

    with pytest.raises(BundleError, match="bundle version"):  # the service does not start with it
        _translator(load_bundle(bundle_path), Settings(models_dir=bundle_path, backend="onnx"))
    own = require_shortlist(load_bundle(shortlisted["lstm"]))
    meta = dict(own.meta, tgt_tokenizer_sha256="0" * 64)  # another target vocabulary
    save_shortlist(
        type(own)(own.indptr, own.indices, own.frequent, own.tgt_vocab_size, meta), bundle_path / FILE
    )
    with pytest.raises(BundleError, match="built for tgt tokenizer sha256 0000"):
        load_shortlist(load_bundle(bundle_path))


def test_asking_for_a_shortlist_a_bundle_does_not_have_is_one_line(trained_bundles):
    result = run_nmt(
        "translate", "--model", str(trained_bundles["lstm"]), "--shortlist", stdin="A man.\n", check=False
    )
    assert_one_line_error(result, f"no {FILE}", "nmt shortlist")


# -- decoding with it ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transformer", "lstm", "lstm_attention"])
def test_pytorch_and_onnx_runtime_decode_a_shortlist_alike(arch, shortlisted, tiny_corpus):
    bundle = load_bundle(shortlisted[arch])
    sentences = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:12]
    search = bundle.search.with_overrides(n_best=2)
    torch_translator = Translator.from_bundle(bundle, shortlist=True, batch_size=4)
    onnx_translator = Translator.from_bundle(bundle, backend="onnx", shortlist=True, batch_size=4)
    expected = torch_translator.translate(sentences, search)
    got = onnx_translator.translate(sentences, search)
    for nbest, onnx_nbest in zip(expected, got, strict=True):
        assert [t.text for t in onnx_nbest] == [t.text for t in nbest]
        assert [t.score for t in onnx_nbest] == pytest.approx([t.score for t in nbest], abs=1e-4)
    # the steps: tokens are vocabulary ids, the banned ids never come, -inf outside the shortlist
    src, lengths = collate_source(torch_translator.encode(sentences[:4]))
    vocabulary = require_shortlist(bundle).vocabulary(src)
    assert vocabulary is not None and vocabulary.numel() < bundle.tgt_tokenizer.vocab_size
    model = bundle.load_model().with_vocabulary(vocabulary)
    onnx_model = OnnxModel.from_bundle(bundle).with_vocabulary(vocabulary)
    with torch.inference_mode():
        memory, state = model.encode(src, lengths)
        onnx_memory, onnx_state = onnx_model.encode(src, lengths)
        prev = torch.full((4,), 2)
        best, tokens, eos, _ = model.decode_top_k(prev, memory, state, 3)
        onnx_best, onnx_tokens, onnx_eos, _ = onnx_model.decode_top_k(prev, onnx_memory, onnx_state, 3)
        log_probs, _ = model.decode_step(prev, memory, state)
        onnx_log_probs, _ = onnx_model.decode_step(prev, onnx_memory, onnx_state)
    assert torch.equal(tokens, onnx_tokens) and torch.isin(tokens, vocabulary).all()
    assert not torch.isin(tokens, torch.tensor(BANNED_IDS)).any()
    torch.testing.assert_close(onnx_best, best, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_eos, eos, atol=1e-4, rtol=0)
    outside = torch.ones(log_probs.size(1), dtype=torch.bool)
    outside[vocabulary] = False
    assert torch.isinf(log_probs[:, outside]).all() and torch.isinf(onnx_log_probs[:, outside]).all()
    torch.testing.assert_close(onnx_log_probs[:, vocabulary], log_probs[:, vocabulary], atol=1e-4, rtol=0)
    assert torch.allclose(
        log_probs[:, vocabulary].exp().sum(1), torch.ones(4), atol=1e-4
    )  # normalised over it: the shortlist samples nothing outside it (`outside` 0)


@pytest.mark.parametrize("arch", ["transformer", "lstm_attention"])
def test_a_sample_of_every_id_outside_gives_the_full_vocabulary_s_log_probs(arch, shortlisted):
    """With every id outside the shortlist in the normaliser's sample, each id of the shortlist
    gets its log-probability under the full vocabulary, on both engines; with a smaller sample,
    an estimate closer to it than normalising over the shortlist alone (no sample)."""
    bundle = load_bundle(shortlisted[arch])
    src, lengths = collate_source(bundle.src_tokenizer.encode(["A man.", "Two dogs play in the snow."]))
    vocab_size = bundle.tgt_tokenizer.vocab_size
    vocabulary = torch.cat([torch.arange(4), torch.arange(5, vocab_size, 3)])[:128]
    model, onnx_model = bundle.load_model(), OnnxModel.from_bundle(bundle)
    prev = torch.full((2,), 2)

    def step(sample: int) -> tuple[Tensor, Tensor]:
        found = []
        for engine in (model, onnx_model):
            shortlisted_engine = engine.with_vocabulary(vocabulary, sample)
            with torch.inference_mode():
                log_probs, _ = shortlisted_engine.decode_step(prev, *shortlisted_engine.encode(src, lengths))
            found.append(log_probs[:, vocabulary])
        return found[0], found[1]

    with torch.inference_mode():
        full = model.decode_step(prev, *model.encode(src, lengths))[0][:, vocabulary]
    exact, onnx_exact = step(vocab_size)
    torch.testing.assert_close(exact, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(onnx_exact, full, atol=1e-4, rtol=0)
    sampled, onnx_sampled = step(16)
    torch.testing.assert_close(onnx_sampled, sampled, atol=1e-4, rtol=0)
    renormalised, _ = step(0)
    assert (renormalised.exp().sum(1) - 1).abs().max() < 1e-4  # no sample: over the shortlist alone
    assert (sampled - full).abs().mean() < (renormalised - full).abs().mean()
    # whole translations with a shortlist that samples outside: the same on both engines
    shortlist = require_shortlist(bundle)
    sampling = replace(shortlist, meta={**shortlist.meta, "outside": 16})
    sentences = ["A man in a red shirt.", "Two dogs play in the snow.", "A girl is jumping."]
    found = []
    for backend in ("torch", "onnx"):
        translator = Translator.from_bundle(bundle, backend=backend, shortlist=True)
        translator.shortlist = sampling
        found.append(translator.translate(sentences, bundle.search.with_overrides(n_best=2)))
    for nbest, onnx_nbest in zip(*found, strict=True):
        assert [t.text for t in onnx_nbest] == [t.text for t in nbest]
        assert [t.score for t in onnx_nbest] == pytest.approx([t.score for t in nbest], abs=1e-4)


def test_the_full_vocabulary_through_the_seam_is_the_model_itself(shortlisted, tiny_corpus):
    bundle = load_bundle(shortlisted["lstm_attention"])
    src, lengths = collate_source(bundle.src_tokenizer.encode(["A man.", "Two dogs play in the snow."]))
    model = bundle.load_model()
    everything = torch.arange(bundle.tgt_tokenizer.vocab_size)
    with torch.inference_mode():
        memory, state = model.encode(src, lengths)
        prev = torch.full((2,), 2)
        expected = model.decode_top_k(prev, memory, state, 4)
        got = model.with_vocabulary(everything).decode_top_k(prev, memory, state, 4)
        *_, attention = model.with_vocabulary(everything).decode_step_with_attention(prev, memory, state)
    for a, b in zip(expected[:3], got[:3], strict=True):
        torch.testing.assert_close(a, b)
    assert attention.shape == src.shape


def test_alignments_come_along_with_a_shortlist(shortlisted):
    bundle = load_bundle(shortlisted["lstm_attention"])
    expected = Translator.from_bundle(bundle, shortlist=True).translate(
        ["A man in a red shirt."], alignments=True
    )
    got = Translator.from_bundle(bundle, backend="onnx", shortlist=True).translate(
        ["A man in a red shirt."], alignments=True
    )
    assert got[0][0].text == expected[0][0].text and got[0][0].alignment == expected[0][0].alignment


def test_an_export_without_the_vocabulary_input_translates_but_refuses_a_shortlist(
    shortlisted, tmp_path, monkeypatch
):
    from serving.registry import _translator
    from serving.settings import Settings

    bundle_path = _copy(shortlisted["lstm"], tmp_path)
    bundle = load_bundle(bundle_path)
    plain_head = onnx_export._attach_head
    monkeypatch.setattr(  # an export as made before shortlists: the plain head, nothing to check
        onnx_export,
        "_attach_head",
        lambda path, projection, shortlists=True: plain_head(path, projection, False),
    )
    monkeypatch.setattr(onnx_export, "_max_shortlist_difference", lambda *args: 0.0)
    export_onnx(bundle)
    monkeypatch.undo()
    assert not OnnxModel.from_bundle(bundle).takes_vocabulary
    assert Translator.from_bundle(bundle, backend="onnx").translate_best(["A man."])
    with pytest.raises(BundleError, match="no vocabulary input.*run nmt export --model .* --format onnx"):
        Translator.from_bundle(bundle, backend="onnx", shortlist=True)
    result = run_nmt(
        "translate",
        "--model",
        str(bundle_path),
        "--backend",
        "onnx",
        "--shortlist",
        stdin="A man.\n",
        check=False,
    )
    assert_one_line_error(result, "no vocabulary input", "nmt export")
    # the service exports it again, as it does an export of another bundle version
    translator = _translator(bundle, Settings(models_dir=bundle_path, backend="onnx"))
    assert translator.shortlist is not None and OnnxModel.from_bundle(bundle).takes_vocabulary
    assert (
        _translator(bundle, Settings(models_dir=bundle_path, backend="onnx", shortlist=False)).shortlist
        is None
    )


def test_the_cache_keeps_a_shortlist_s_translations_apart(shortlisted):
    """Replicas with and without NMT_SHORTLIST share one Redis: their translations may differ, so
    their cache keys must."""
    from serving.registry import ModelEntry

    bundle = load_bundle(shortlisted["lstm"])

    def entry(shortlist: bool) -> ModelEntry:
        translator = Translator.from_bundle(bundle, shortlist=shortlist)
        return ModelEntry(bundle, translator, batcher=None, choice=None, direction=bundle.direction())  # type: ignore[arg-type]

    with_it, without = entry(True), entry(False)
    assert without.cache_version == bundle.version
    assert with_it.cache_version != without.cache_version and with_it.version == without.version
    # another shortlist file (another table, or another sample for the normaliser) translates
    # differently too
    with_other = replace(with_it, translator=copy.copy(with_it.translator))
    with_other.translator.shortlist = replace(with_it.translator.shortlist, digest="0" * 64)
    assert with_other.cache_version not in (with_it.cache_version, without.cache_version)


# -- a multilingual bundle: a table per target language -----------------------------------------


@pytest.fixture(scope="module")
def multilingual_shortlisted(multilingual_bundle, multi30k, tmp_path_factory) -> Path:
    """A copy of the tiny multilingual bundle with a shortlist of its six directions' corpora (300
    lines of Multi30k train each), made by the CLI, and an fp32 ONNX export."""
    folder = tmp_path_factory.mktemp("multilingual-shortlist")
    path = _copy(multilingual_bundle, folder)
    for lang in ("en", "de", "fr"):
        lines = read_lines(multi30k / f"train.{lang}.gz")[:300]
        (folder / f"train.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpora = []
    for d in load_bundle(path).directions:
        corpora += [
            "--direction",
            str(d),
            "--src",
            str(folder / f"train.{d.source}"),
            "--tgt",
            str(folder / f"train.{d.target}"),
        ]
    run_nmt("shortlist", "--model", str(path), *corpora, "--k", "5", "--frequent", "20")
    export_onnx(load_bundle(path))
    return path


def test_a_multilingual_bundle_gets_a_table_per_target_language(multilingual_shortlisted, tmp_path):
    bundle = load_bundle(multilingual_shortlisted)
    shortlist = require_shortlist(bundle)
    assert shortlist.languages == ["de", "en", "fr"] and shortlist.tables == 3
    assert [token for _, token in shortlist.meta["targets"]] == [
        bundle.language_token_id(t) for t in ("de", "en", "fr")
    ]
    assert shortlist.meta["pairs"] == 6 * 300 and len(shortlist.meta["corpus"]) == 6
    read = read_shortlist(save_shortlist(shortlist, tmp_path / FILE))
    assert np.array_equal(read.indptr, shortlist.indptr) and read.languages == shortlist.languages
    # the same source words into German and into French: each batch gets its own table's rows
    translator = Translator.from_bundle(bundle)
    texts = ["A man rides a bike.", "Two dogs play in the snow."]
    german, french = (collate_source(translator.encode(texts, target))[0] for target in ("de", "fr"))
    into_german, into_french = shortlist.vocabulary(german), shortlist.vocabulary(french)
    assert into_german is not None and into_french is not None
    assert not torch.equal(into_german, into_french)
    de_block = shortlist.targets[bundle.language_token_id("de")]
    words = german[:, 1:].flatten()
    rows = words[(words >= SPECIALS)].unique().numpy() + de_block * shortlist.src_vocab_size
    allowed = {*shortlist.candidates(rows).tolist(), *shortlist.frequent.reshape(3, -1)[de_block].tolist()}
    assert allowed <= set(into_german.tolist())
    # a batch into both languages (the service's batcher may mix them): each source its own table
    mixed = shortlist.vocabulary(translator.encode(texts[:1], "de") + translator.encode(texts[1:], "fr"))
    assert mixed is not None
    firsts = [
        shortlist.vocabulary(translator.encode(texts[:1], "de")),
        shortlist.vocabulary(translator.encode(texts[1:], "fr")),
    ]
    assert set().union(*(v.tolist() for v in firsts if v is not None)) <= set(mixed.tolist())
    # a source that does not start with a language token has no table
    with pytest.raises(ValueError, match="start with a target-language token"):
        shortlist.vocabulary(german[:, 1:])


def test_a_multilingual_shortlist_decodes_alike_on_pytorch_and_onnx_runtime(multilingual_shortlisted):
    bundle = load_bundle(multilingual_shortlisted)
    texts = ["A man rides a bike.", "Two dogs play in the snow.", "A woman is cooking."]
    for target in ("de", "fr"):
        expected = Translator.from_bundle(bundle, shortlist=True).translate_best(texts, target=target)
        got = Translator.from_bundle(bundle, backend="onnx", shortlist=True).translate_best(
            texts, target=target
        )
        assert got == expected


def test_a_multilingual_shortlist_needs_a_corpus_into_every_target_language(
    multilingual_bundle, multi30k, tmp_path
):
    path = _copy(multilingual_bundle, tmp_path)
    result = run_nmt(
        "shortlist", "--model", str(path), "--direction", "en-de", "--src", str(multi30k / "val.en.gz"),
        "--tgt", str(multi30k / "val.de.gz"), check=False,
    )  # fmt: skip
    assert_one_line_error(result, "translates into en, fr too")
    result = run_nmt(
        "shortlist",
        "--model",
        str(path),
        "--src",
        str(multi30k / "val.en.gz"),
        "--tgt",
        str(multi30k / "val.de.gz"),
        check=False,
    )
    assert_one_line_error(result, "several directions")  # which direction is the corpus? it must say
    result = run_nmt(
        "shortlist", "--model", str(path), "--direction", "en-xx", "--src", str(multi30k / "val.en.gz"),
        "--tgt", str(multi30k / "val.de.gz"), check=False,
    )  # fmt: skip
    assert_one_line_error(result, "does not translate en-xx")
    assert not (path / FILE).exists()


def test_a_shortlist_without_a_table_for_each_target_language_is_refused(multilingual_shortlisted, tmp_path):
    path = _copy(multilingual_shortlisted, tmp_path)
    tables = require_shortlist(load_bundle(path))
    rows, n = tables.src_vocab_size, tables.frequent.size // 3
    two = type(
        tables
    )(  # the German and English tables only
        tables.indptr[: 2 * rows + 1],
        tables.indices[: tables.indptr[2 * rows]],
        tables.frequent[: 2 * n],
        tables.tgt_vocab_size,
        {**tables.meta, "targets": tables.meta["targets"][:2]},
    )
    save_shortlist(two, path / FILE)
    with pytest.raises(
        BundleError, match=r"built for target languages \['de', 'en'\], the bundle has \['de', 'en', 'fr'\]"
    ):
        load_shortlist(load_bundle(path))


def test_ctranslate2_refuses_a_multilingual_shortlist_in_one_line(multilingual_shortlisted, tmp_path):
    from nmt.export.ctranslate2 import export_ctranslate2
    from serving.registry import _translator
    from serving.settings import Settings

    path = _copy(multilingual_shortlisted, tmp_path)
    export_ctranslate2(load_bundle(path))
    assert not (path / "ct2" / "vmap.txt").exists()  # no vmap for a table per target language
    result = run_nmt(
        "translate",
        "--model",
        str(path),
        "--backend",
        "ctranslate2",
        "--shortlist",
        "--source",
        "en",
        "--target",
        "de",
        stdin="A man.\n",
        check=False,
    )
    assert_one_line_error(result, "a table per target language", "onnx or torch backend")
    # the service serves it on CTranslate2 as without a shortlist, and says so
    translator = _translator(load_bundle(path), Settings(models_dir=path, backend="ctranslate2"))
    assert translator.shortlist is None


def test_the_tuning_and_diagnosis_benchmarks_run_over_the_sample_sizes(shortlisted, tiny_corpus):
    """benchmarks/shortlist_tune.py over (score, k, N, M), and benchmarks/shortlist_diagnose.py, on val."""
    path = str(shortlisted["lstm_attention"])
    data = ("--data", str(tiny_corpus), "--threads", "1")
    out = run_benchmark(
        "shortlist_tune.py", "--model", path, "--k", "5", "--frequent", "20", "--outside", "0,16,100000", *data,
        "--score", "dice,ibm1", verdict=False,
    )  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["en-de"]]
    table = rows[len(rows) // 2 :]  # each row is printed as it comes, then in the table
    assert [(row[1], row[4]) for row in table] == [
        (score, m) for score in ("dice", "ibm1") for m in ("0", "16", "100000")
    ]
    assert all(row[-1].endswith("/24") for row in table)
    out = run_benchmark("shortlist_diagnose.py", "--model", path, *data, verdict=False)
    assert "translations the shortlist changes:" in out and "mass outside the union" in out
    assert "of them in the sentence's own source" in out


def test_the_tuning_benchmark_builds_from_another_target_side_and_reports_test(
    shortlisted, tiny_corpus, tmp_path
):
    """--train-target: the tables from another target side (here the references reversed, line
    by line, so the candidates differ from the references'), --split: the test set reported."""
    path = str(shortlisted["lstm_attention"])
    reversed_target = tmp_path / "train.reversed.de"
    lines = (tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines()
    reversed_target.write_text("\n".join(line[::-1] for line in lines) + "\n", encoding="utf-8")
    common = ("--model", path, "--k", "5", "--frequent", "20", "--data", str(tiny_corpus), "--threads", "1")
    out = run_benchmark(
        "shortlist_tune.py", *common, "--train-target", str(reversed_target), "--split", "test_2016_flickr",
        verdict=False,
    )  # fmt: skip
    assert "on test_2016_flickr (24 sentences)" in out and f"tables from {reversed_target}" in out
    reference = run_benchmark("shortlist_tune.py", *common, "--split", "test_2016_flickr", verdict=False)
    sizes = [
        [line.split()[5] for line in text.splitlines() if line.split()[:1] == ["en-de"]][0]
        for text in (out, reference)
    ]
    assert sizes[0] != sizes[1]  # another table: another mean vocabulary per batch


# -- the shipped bundles ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_bundle_has_its_shortlist(name):
    bundle = load_bundle(DEFAULT_BUNDLE.parent / name)
    shortlist = require_shortlist(bundle)
    assert shortlist.meta["corpus"]["src"].endswith("train.en.gz") and shortlist.meta["pairs"] == 29000


def test_the_six_direction_bundle_has_a_table_per_target_language():
    bundle = load_bundle(DEFAULT_BUNDLE.parent / MULTILINGUAL)
    shortlist = require_shortlist(bundle)
    assert shortlist.languages == ["de", "en", "fr"] and shortlist.meta["pairs"] == 6 * 29000
    assert sorted(c["direction"] for c in shortlist.meta["corpus"]) == sorted(map(str, bundle.directions))
    assert (shortlist.meta["k"], shortlist.meta["frequent"], shortlist.outside) == (
        100,
        1000,
        256,
    )  # chosen on val (docs/decode.md)
    assert shortlist.meta["copies"] is True  # one vocabulary for the three languages


@pytest.mark.parametrize("direction", ["en-de", "fr-en"])
def test_the_six_direction_shortlist_keeps_its_translations(direction, multi30k):
    """As below, in two of its directions: into German and into English."""
    bundle = load_bundle(DEFAULT_BUNDLE.parent / MULTILINGUAL)
    source, target = direction.split("-")
    texts = read_lines(multi30k / f"val.{source}.gz")[:60]
    references = read_lines(multi30k / f"val.{target}.gz")[:60]
    full = Translator.from_bundle(bundle).translate_best(texts, target=target)
    short = Translator.from_bundle(bundle, shortlist=True).translate_best(texts, target=target)
    assert sum(a == b for a, b in zip(full, short, strict=True)) >= 0.6 * len(texts)
    assert bleu_only(short, references)[0] >= bleu_only(full, references)[0] - 1.5


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shortlist_keeps_the_translations_of_the_shipped_bundles(name, multi30k):
    """BLEU-neutral on a few sentences of val (where k and N were tuned): many translations
    unchanged, BLEU not lower by more than a few sentences' worth (the 1,000-sentence test-set
    figures are benchmarks/decode.py's, docs/decode.md)."""
    bundle = load_bundle(DEFAULT_BUNDLE.parent / name)
    texts = read_lines(multi30k / "val.en.gz")[:100]
    references = read_lines(multi30k / "val.de.gz")[:100]
    full = Translator.from_bundle(bundle).translate_best(texts)
    short = Translator.from_bundle(bundle, shortlist=True).translate_best(texts)
    assert sum(a == b for a, b in zip(full, short, strict=True)) >= 0.4 * len(texts)
    assert bleu_only(short, references)[0] >= bleu_only(full, references)[0] - 1.0


def test_ctranslate2_decodes_with_the_shipped_vmap_and_refuses_a_stale_one(
    multi30k, tmp_path, default_exported
):
    bundle = load_bundle(default_exported)
    texts = read_lines(multi30k / "test_2016_flickr.en.gz")[:32]
    full = Translator.from_bundle(bundle, backend="ctranslate2").translate_best(texts)
    translator = Translator.from_bundle(bundle, backend="ctranslate2", shortlist=True)
    assert translator.model.use_vmap
    short = translator.translate_best(texts)
    assert sum(a == b for a, b in zip(full, short, strict=True)) >= 0.6 * len(texts)
    # a vmap written from another shortlist is refused
    copy = _copy(DEFAULT_BUNDLE, tmp_path)
    meta_file = copy / "ct2" / "export.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["shortlist"] = "0" * 16
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(
        BundleError, match="vmap.txt is missing or was not written from the bundle's shortlist"
    ):
        Translator.from_bundle(load_bundle(copy), backend="ctranslate2", shortlist=True)


def test_the_decode_benchmark_judges_each_engine_with_its_shortlist(shortlisted, tiny_corpus):
    args = ["--model", str(shortlisted["lstm_attention"]), "--data", str(tiny_corpus), "--sentences", "8"]
    stdout = run_benchmark("decode.py", "--shortlist-only", *args, "--threads", "1")
    assert "PyTorch eager + shortlist" in stdout and "ONNX Runtime fp32 + shortlist" in stdout
    assert "int8" not in stdout and "greedy" not in stdout
    assert stdout.count("shortlist BLEU no more than 0.2 below") == 2
    assert stdout.count("+ shortlist >= 1.5x") == 2  # a recurrent model: the speed target too
    # beside each BLEU difference: how many translations differ, and the paired bootstrap's p
    context = re.findall(r"(\d+) of 8 translations differ, paired bootstrap p = (\d\.\d{3})", stdout)
    assert len(context) == 2 and all(0 <= int(n) <= 8 and 0 <= float(p) <= 1 for n, p in context)


def test_at_two_threads_the_shortlist_speed_takes_each_way_s_faster(shortlisted, tiny_corpus):
    """At 2 threads ONNX Runtime runs again as 2 one-thread workers, with and without the
    shortlist (the service's way on 2 cores), and the speed target takes each one's faster way."""
    args = ["--model", str(shortlisted["lstm_attention"]), "--data", str(tiny_corpus), "--sentences", "8"]
    stdout = run_benchmark("decode.py", "--shortlist-only", *args, "--threads", "2")
    assert "ONNX Runtime fp32 + shortlist, 2 workers x 1 thread" in stdout
    assert "ONNX Runtime fp32, 2 workers x 1 thread" in stdout
    speed = [line for line in stdout.splitlines() if "ONNX Runtime fp32 + shortlist >= 1.5x" in line]
    assert len(speed) == 1 and "each the faster of 2 threads in one call or 2 workers" in speed[0]
    assert "within each call" in speed[0]
