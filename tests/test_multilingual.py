"""Multilingual bundles, the reading side: directions and language tokens in the bundle, the
translator prepending the target's token (and leaving it out of alignments), the three backends,
and the `--source` / `--target` flags of translate, evaluate, attention and compare."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from nmt.bundle import load_bundle
from nmt.config import SearchConfig
from nmt.errors import BundleError, NmtError
from nmt.languages import Direction, language_token
from nmt.translator import Translator
from tests.conftest import MULTILINGUAL_LANGS, assert_one_line_error, make_multilingual_bundle, run_nmt

TEXTS = ["A man runs.", "Two dogs play in the snow.", "", "A woman sings on a stage."]
GREEDY = SearchConfig(beam_size=1, max_len_a=1.0, max_len_b=5)


@pytest.fixture(scope="module")
def test_files(multi30k, tmp_path_factory) -> Path:
    """test_2016_flickr's first 12 lines in en, de and fr, as test.LANG."""
    folder = tmp_path_factory.mktemp("multi-test")
    for lang in MULTILINGUAL_LANGS:
        with gzip.open(multi30k / f"test_2016_flickr.{lang}.gz", "rt", encoding="utf-8") as handle:
            (folder / f"test.{lang}").write_text("".join(next(handle) for _ in range(12)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def exported(multilingual_bundle, tmp_path_factory) -> Path:
    """A copy of the multilingual bundle with its ONNX and CTranslate2 exports."""
    bundle = shutil.copytree(multilingual_bundle, tmp_path_factory.mktemp("exported") / "bundle")
    run_nmt("export", "--model", str(bundle), "--format", "onnx")
    run_nmt("export", "--model", str(bundle), "--format", "ctranslate2")
    return Path(bundle)


def test_a_multilingual_bundle_declares_its_directions(multilingual_bundle):
    bundle = load_bundle(multilingual_bundle)
    assert bundle.language_tokens and bundle.multilingual
    assert len(bundle.directions) == 6 and bundle.translates(Direction("de", "fr"))
    assert bundle.direction("de", "fr") == Direction("de", "fr")
    with pytest.raises(NmtError, match=r"several directions \(en-de, en-fr, .*\): name the source"):
        bundle.direction()
    with pytest.raises(NmtError, match=r"several directions .*asked \?-fr"):
        bundle.direction(None, "fr")
    with pytest.raises(NmtError, match=r"does not translate en-es; it translates en-de, en-fr, de-en"):
        bundle.direction("en", "es")
    with pytest.raises(NmtError, match="several directions"):
        bundle.src_lang  # noqa: B018 (a multilingual bundle has no one source language)
    token = bundle.src_tokenizer.processor.piece_to_id("<2fr>")
    assert bundle.language_token_id("fr") == token and token > 3


def test_an_old_bundle_is_one_direction_without_tokens(trained_bundles):
    bundle = load_bundle(trained_bundles["transformer"])
    assert bundle.directions == [Direction("en", "de")] and not bundle.language_tokens
    assert (bundle.src_lang, bundle.tgt_lang) == ("en", "de")
    assert bundle.direction() == bundle.direction("en", "de") == bundle.direction(target="de")
    assert bundle.language_token_id("de") is None
    with pytest.raises(NmtError, match="does not translate de-en; it translates en-de"):
        bundle.direction("de", "en")
    assert Translator.from_bundle(bundle).encode(["A man."], "fr") == bundle.src_tokenizer.encode(["A man."])


def test_a_missing_language_token_is_a_bundle_error_naming_the_piece(multilingual_bundle, tmp_path):
    bundle = shutil.copytree(multilingual_bundle, tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["directions"].append(["en", "es"])
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="no piece '<2es>'"):
        load_bundle(bundle)
    meta["directions"] = [["en", "de"], ["en", "de"]]
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="bad directions"):
        load_bundle(bundle)


def test_encode_prepends_the_target_token(multilingual_bundle):
    bundle = load_bundle(multilingual_bundle)
    translator = Translator.from_bundle(bundle)
    plain = bundle.src_tokenizer.encode(TEXTS)
    for target in ("de", "fr", "en"):
        token = bundle.src_tokenizer.processor.piece_to_id(language_token(target))
        ids = translator.encode(TEXTS, target)
        assert ids == [[token, *seq] if seq else [] for seq in plain]  # an empty text stays empty
    with pytest.raises(NmtError, match="no target language: the model translates into de, en, fr"):
        translator.encode(TEXTS)
    with pytest.raises(NmtError, match="target language 'es'"):
        translator.encode(TEXTS, "es")
    # a model with one target language needs no target named
    into_de = Translator.from_bundle(bundle, language_ids={"de": bundle.language_token_id("de")})
    assert into_de.encode(TEXTS) == translator.encode(TEXTS, "de")


def test_the_token_steers_the_translation(multilingual_bundle):
    translator = Translator.from_bundle(load_bundle(multilingual_bundle))
    into = {t: translator.translate_best(TEXTS, GREEDY, t) for t in ("de", "fr")}
    assert into["de"] != into["fr"] and into["de"][2] == into["fr"][2] == ""
    by_ids = translator.translate_ids(translator.encode(TEXTS, "fr"), GREEDY)
    assert [nbest[0].text for nbest in by_ids] == into["fr"]


def test_the_language_token_is_no_source_word_in_alignments(multilingual_bundle):
    bundle = load_bundle(multilingual_bundle)
    translator = Translator.from_bundle(bundle)
    [best] = translator.translate(["A man runs."], GREEDY, alignments=True, target="de")[0]
    pieces = bundle.src_tokenizer.pieces(bundle.src_tokenizer.encode(["A man runs."])[0])
    assert best.attention is not None and best.attention.src_pieces == pieces  # no <2de>
    assert best.attention.weights.shape == (len(best.attention.tgt_pieces) + 1, len(pieces) + 1)
    assert all(0 <= src < 3 for src, _ in best.alignment or [])  # three source words


@pytest.mark.parametrize("backend", ["onnx", "ctranslate2"])
def test_exports_translate_as_pytorch(exported, backend):
    bundle = load_bundle(exported)
    torch.set_num_threads(1)
    reference = Translator.from_bundle(bundle)
    other = Translator.from_bundle(bundle, backend=backend, engine={"threads": 1})
    for target in ("de", "fr"):
        for text in TEXTS:  # one at a time: CTranslate2's length limit is one per batch
            [mine] = reference.translate([text], GREEDY, target=target)[0]
            [its] = other.translate([text], GREEDY, target=target)[0]
            assert its.text == mine.text
            if backend == "onnx":  # CTranslate2 scores a sentence cut at the length limit otherwise
                assert its.log_prob == pytest.approx(mine.log_prob, abs=1e-3)
    if backend == "ctranslate2":  # it is fed pieces: the language tokens must be in its vocabulary
        vocabulary = json.loads((exported / "ct2" / "shared_vocabulary.json").read_text(encoding="utf-8"))
        assert {"<2de>", "<2fr>", "<2en>"} <= set(vocabulary)


def test_cli_translate_needs_a_direction_of_a_multilingual_bundle(multilingual_bundle, trained_bundles):
    model = str(multilingual_bundle)
    result = run_nmt("translate", "--model", model, stdin="A man runs.\n", check=False)
    assert_one_line_error(result, "--source/--target", "several directions", "en-de, en-fr")
    result = run_nmt(
        "translate", "--model", model, "--source", "en", "--target", "es", stdin="A.\n", check=False
    )
    assert_one_line_error(result, "does not translate en-es", "it translates en-de")
    out = run_nmt(
        "translate",
        "--model",
        model,
        "--source",
        "en",
        "--target",
        "fr",
        "--beam-size",
        "1",
        stdin="\n".join(TEXTS) + "\n",
    ).stdout.split("\n")[:-1]
    bundle = load_bundle(multilingual_bundle)
    assert out == Translator.from_bundle(bundle).translate_best(
        TEXTS, bundle.search.with_overrides(beam_size=1), "fr"
    )

    bilingual = str(trained_bundles["transformer"])
    result = run_nmt(
        "translate", "--model", bilingual, "--source", "de", "--target", "en", stdin="A.\n", check=False
    )
    assert_one_line_error(result, "tiny-transformer does not translate de-en", "it translates en-de")
    run_nmt("translate", "--model", bilingual, "--source", "en", "--target", "de", stdin="A man.\n")


def test_cli_evaluate_records_scores_per_direction(multilingual_bundle, test_files, tmp_path):
    bundle = shutil.copytree(multilingual_bundle, tmp_path / "bundle")
    version = load_bundle(bundle).version
    printed = {}
    for source, target in (("en", "fr"), ("de", "en")):
        args = ["--src", str(test_files / f"test.{source}"), "--ref", str(test_files / f"test.{target}")]
        result = run_nmt(
            "evaluate",
            "--model",
            str(bundle),
            *args,
            "--source",
            source,
            "--target",
            target,
            "--json",
            "--record",
            "test_2016_flickr",
        )
        printed[f"{source}-{target}"] = json.loads(result.stdout)
    loaded = load_bundle(bundle)
    assert loaded.version == version
    assert set(loaded.meta["scores"]) == {"en-fr", "de-en"}
    for pair, scores in printed.items():
        assert scores["direction"] == pair
        stored = loaded.scores(Direction.parse(pair))["test_2016_flickr"]
        assert stored["bleu"] == scores["bleu"] and stored["sentences"] == 12
    result = run_nmt(
        "evaluate",
        "--model",
        str(bundle),
        "--src",
        str(test_files / "test.en"),
        "--ref",
        str(test_files / "test.de"),
        check=False,
    )
    assert_one_line_error(result, "--source/--target", "several directions")


def test_cli_attention_with_a_direction(multilingual_bundle, tmp_path):
    out = tmp_path / "attention.png"
    result = run_nmt(
        "attention",
        "--model",
        str(multilingual_bundle),
        "--source",
        "en",
        "--target",
        "de",
        "--text",
        "A man runs.",
        "--out",
        str(out),
    )
    assert out.stat().st_size > 0 and result.stdout.strip().endswith(str(out))


def test_compare_per_shared_direction(multilingual_bundle, trained_bundles, test_files, tmp_path):
    other = shutil.copytree(multilingual_bundle, tmp_path / "other")
    meta = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps(meta | {"name": "other-multi"}))
    src, ref = str(test_files / "test.{src}"), str(test_files / "test.{tgt}")
    result = run_nmt(
        "compare",
        "--models",
        str(multilingual_bundle),
        str(other),
        "--src",
        src,
        "--ref",
        ref,
        "--source",
        "en",
        "--samples",
        "50",
        "--beam-size",
        "1",
        "--out",
        str(tmp_path / "report"),
    )
    assert "## en-de" in result.stdout and "## en-fr" in result.stdout and "## de-en" not in result.stdout
    for pair in ("en-de", "en-fr"):
        report = json.loads((tmp_path / "report" / pair / "compare.json").read_text())
        assert report["direction"] == pair and report["test_set"]["src"].endswith("test.en")
        assert [s["name"] for s in report["systems"]] == ["tiny-multi-transformer", "other-multi"]

    # a multilingual and a bilingual bundle share en-de only: the files' names agree with it
    bilingual = str(trained_bundles["transformer"])
    en, de, fr = (str(test_files / f"test.{lang}") for lang in ("en", "de", "fr"))
    result = run_nmt(
        "compare",
        "--models",
        str(multilingual_bundle),
        bilingual,
        "--src",
        en,
        "--ref",
        de,
        "--samples",
        "50",
        "--beam-size",
        "1",
    )
    assert "| tiny-multi-transformer |" in result.stdout and "| tiny-transformer |" in result.stdout
    result = run_nmt(
        "compare", "--models", str(multilingual_bundle), bilingual, "--src", en, "--ref", fr, check=False
    )
    assert_one_line_error(result, "test.fr", "'fr'", "en->de")
    result = run_nmt(
        "compare",
        "--models",
        str(multilingual_bundle),
        "--src",
        en,
        "--ref",
        str(tmp_path / "x"),
        check=False,
    )
    assert_one_line_error(result, "several directions", "en->de, en->fr")


def test_an_attention_rnn_takes_the_token_on_torch_and_onnx(multi30k, tmp_path):
    path = make_multilingual_bundle(multi30k, tmp_path, "lstm_attention", steps=30)
    run_nmt("export", "--model", str(path), "--format", "onnx")
    bundle = load_bundle(path)
    torch.set_num_threads(1)
    reference = Translator.from_bundle(bundle)
    onnx = Translator.from_bundle(bundle, backend="onnx", engine={"threads": 1})
    texts = TEXTS[:2]
    pieces = [bundle.src_tokenizer.pieces(ids) for ids in bundle.src_tokenizer.encode(texts)]
    for target in ("de", "fr"):
        ours = reference.translate(texts, GREEDY, alignments=True, target=target)
        theirs = onnx.translate(texts, GREEDY, alignments=True, target=target)
        for mine, its, source in zip(ours, theirs, pieces, strict=True):
            assert its[0].text == mine[0].text and its[0].alignment == mine[0].alignment
            for found in (mine[0], its[0]):
                assert found.attention is not None and found.attention.src_pieces == source
                assert found.attention.weights.shape[1] == len(source) + 1
