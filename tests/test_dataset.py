"""The prepared dataset (nmt.dataset): tokenize once, memory-map, detect staleness; several
corpora with temperature sampling; multilingual sources with a target-language token."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nmt.config import parse_recipe
from nmt.data import ParallelCorpus, read_corpus
from nmt.dataset import (
    MANIFEST,
    ensure_prepared,
    open_prepared,
    prepare,
    stale_reason,
)
from nmt.errors import ConfigError, DataError
from nmt.languages import language_token
from nmt.tokenizer import Tokenizer
from tests.conftest import assert_one_line_error, run_nmt, tiny_recipe, write_recipe

LANGS = ("en", "de", "fr")


@pytest.fixture(scope="module")
def three_way(multi30k: Path, tmp_path_factory) -> Path:
    """Multi30k's first 300 train and 12 val lines in en, de and fr (line-aligned), plain text."""
    folder = tmp_path_factory.mktemp("three-way")
    for split, n in (("train", 300), ("val", 12)):
        for lang in LANGS:
            with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
                (folder / f"{split}.{lang}").write_text(
                    "".join(next(handle) for _ in range(n)), encoding="utf-8"
                )
    return folder


def bilingual(corpus: Path, out: Path, **data) -> dict:
    raw = tiny_recipe(corpus, out)
    raw["data"].update(data)
    return raw


def multilingual(corpus: Path, out: Path, pairs=(("en", "de"), ("de", "en"), ("en", "fr"))) -> dict:
    raw = tiny_recipe(corpus, out)
    raw["data"] = {
        "train": [
            {
                "src_lang": s,
                "tgt_lang": t,
                "src": str(corpus / f"train.{s}"),
                "tgt": str(corpus / f"train.{t}"),
            }
            for s, t in pairs
        ],
        "valid": [
            {"src_lang": s, "tgt_lang": t, "src": str(corpus / f"val.{s}"), "tgt": str(corpus / f"val.{t}")}
            for s, t in pairs
        ],
    }
    return raw


def test_prepared_arrays_hold_what_the_tokenizer_gives(tiny_corpus, tmp_path):
    recipe = parse_recipe(bilingual(tiny_corpus, tmp_path / "run"))
    manifest = prepare(recipe, tmp_path / "data", workers=1)
    data = open_prepared(recipe, tmp_path / "data")
    tokenizer = Tokenizer.load(tmp_path / "data" / "spm.model")
    assert manifest["tokenizers"] == {"spm.model": tokenizer.file_hash()}
    assert manifest["dtype"] == "uint16"  # 400 pieces fit
    src_file = str(tiny_corpus / "train.en")
    assert manifest["files"][src_file]["size"] == os.path.getsize(src_file)
    assert manifest["files"][src_file]["lines"] == 400

    src_texts, tgt_texts = read_corpus(recipe.data.train_corpora[0].config)
    expected, report = ParallelCorpus.filtered(
        tokenizer.encode(src_texts),
        tokenizer.encode(tgt_texts),
        recipe.data.max_tokens,
        recipe.data.max_ratio,
    )
    assert manifest["corpora"]["train"][0]["report"]["kept"] == report.kept == len(data.train)
    for index in (0, 17, len(expected) - 1):
        src, tgt = data.train.pair(index)
        assert src.tolist() == list(expected.src_ids[index])
        assert tgt.tolist() == list(expected.tgt_ids[index])
    # one corpus: an epoch is every kept pair once, batched exactly as the in-memory corpus was
    for epoch in (0, 3):
        got = [batch.tolist() for batch in data.train.batches(600, seed=1, epoch=epoch)]
        assert got == expected.batches(600, seed=1, epoch=epoch)
    assert isinstance(data.train.corpora[0].src.ids, np.memmap)


def test_workers_encode_the_same_ids_as_one_process(tiny_corpus, tmp_path, monkeypatch):
    from nmt.tokenizer import EncoderPool

    monkeypatch.setattr(EncoderPool, "CHUNK_LINES", 64)  # several chunks: the workers start
    recipe = parse_recipe(bilingual(tiny_corpus, tmp_path / "run"))
    prepare(recipe, tmp_path / "one", workers=1)
    prepare(recipe, tmp_path / "two", tokenizers=[tmp_path / "one" / "spm.model"] * 2, workers=2)
    names = sorted(p.name for p in (tmp_path / "one").glob("text-*"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("text-*"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_changed_corpus_is_detected_and_prepared_again(tiny_corpus, tmp_path, caplog):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    recipe = parse_recipe(bilingual(corpus, tmp_path / "run"))
    folder = tmp_path / "data"
    assert stale_reason(recipe, folder) == "not prepared yet"
    prepare(recipe, folder, workers=1)
    assert stale_reason(recipe, folder) is None

    train_de = corpus / "train.de"
    lines = train_de.read_text(encoding="utf-8").splitlines(keepends=True)
    train_de.write_text("".join([lines[1], lines[0], *lines[2:]]), encoding="utf-8")  # same size
    assert stale_reason(recipe, folder) == f"{train_de} changed since it was prepared"
    with caplog.at_level(logging.INFO, logger="nmt.dataset"):
        ensure_prepared(recipe, folder, None, explicit=False, workers=1)
    assert f"preparing the data in {folder}: {train_de} changed" in caplog.text
    assert stale_reason(recipe, folder) is None

    changed = parse_recipe(bilingual(corpus, tmp_path / "run", max_tokens=50))
    assert stale_reason(changed, folder) == "recipe keys changed since it was prepared: data.max_tokens"


def test_a_dataset_from_another_tokenizer_is_one_line_naming_the_manifest(tiny_corpus, tmp_path):
    shared = tmp_path / "shared-data"
    raw = bilingual(tiny_corpus, tmp_path / "run", prepared=str(shared))
    path = write_recipe(tmp_path / "recipe.yaml", raw)
    run_nmt("data", "prepare", "--config", str(path), "--workers", "1")
    run = tmp_path / "run"
    run.mkdir()
    other = parse_recipe({**raw, "tokenizer": {"vocab_size": 300}, "data": {**raw["data"], "prepared": None}})
    prepare(other, tmp_path / "other", workers=1)
    shutil.copyfile(tmp_path / "other" / "spm.model", run / "spm.model")  # the run's own tokenizer

    result = run_nmt("train", "--config", str(path), check=False)
    assert_one_line_error(result, str(shared / MANIFEST), "another tokenizer", "data.prepared")


def test_exact_duplicates_are_removed_and_counted(tmp_path):
    src = [f"sentence number {i % 7}" for i in range(40)]
    tgt = [f"Satz Nummer {i % 7}" for i in range(40)]
    src[3], tgt[3] = "sentence number 3", "ein anderer Satz"  # the source repeats, the pair does not
    (tmp_path / "a.en").write_text("\n".join(src) + "\n")
    (tmp_path / "a.de").write_text("\n".join(tgt) + "\n")
    raw = bilingual(tmp_path, tmp_path / "run", dedup=True)
    raw["data"]["train"] = {"src": str(tmp_path / "a.en"), "tgt": str(tmp_path / "a.de")}
    raw["data"]["valid"] = raw["data"]["train"]
    raw["tokenizer"] = {"vocab_size": 40}
    manifest = prepare(parse_recipe(raw), tmp_path / "data", workers=1)
    report = manifest["corpora"]["train"][0]["report"]
    assert (report["kept"], report["duplicates"]) == (8, 32)  # 7 distinct pairs + the other one
    kept = np.load(tmp_path / "data" / manifest["corpora"]["train"][0]["kept"])
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 6, 10]  # the first of each, in corpus order


def test_temperature_sampling_and_epochs(tiny_corpus, tmp_path):
    raw = bilingual(tiny_corpus, tmp_path / "run", temperature=5.0)
    small = tmp_path / "small"
    small.mkdir()
    for lang in ("en", "de"):
        lines = (tiny_corpus / f"train.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        (small / f"train.{lang}").write_text("".join(lines[:40]), encoding="utf-8")
    raw["data"]["train"] = [
        {"name": "big", "src": str(tiny_corpus / "train.en"), "tgt": str(tiny_corpus / "train.de")},
        {"name": "small", "weight": 2.0, "src": str(small / "train.en"), "tgt": str(small / "train.de")},
    ]
    recipe = parse_recipe(raw)
    prepare(recipe, tmp_path / "data", workers=1)
    train = open_prepared(recipe, tmp_path / "data").train
    sizes = np.array([len(c.kept) for c in train.corpora])
    mass = (np.array([1.0, 2.0]) * sizes) ** (1 / 5)
    assert train.probabilities() == pytest.approx(mass / mass.sum())
    assert train.epoch_sizes().tolist() == np.rint(sizes.sum() * mass / mass.sum()).astype(int).tolist()
    assert train.epoch_sizes()[1] > sizes[1]  # flattened: the small corpus is drawn more than once

    epoch = train.epoch_pairs(seed=1, epoch=0)
    assert len(epoch) == train.epoch_sizes().sum()
    from_small = epoch[epoch >= sizes[0]] - sizes[0]
    counts = np.bincount(from_small, minlength=sizes[1])
    repeats = train.epoch_sizes()[1] // sizes[1]
    assert set(counts.tolist()) <= {repeats, repeats + 1}  # whole repeats, then without replacement
    assert np.array_equal(epoch, train.epoch_pairs(seed=1, epoch=0))
    assert not np.array_equal(epoch, train.epoch_pairs(seed=1, epoch=1))
    covered = np.sort(np.concatenate(train.batches(600, seed=1, epoch=0)))
    assert np.array_equal(covered, np.sort(epoch))


def test_multilingual_sources_start_with_the_target_token_and_files_are_encoded_once(three_way, tmp_path):
    pairs = [(s, t) for s in LANGS for t in LANGS if s != t]
    recipe = parse_recipe(multilingual(three_way, tmp_path / "run", pairs))
    assert recipe.data.multilingual
    manifest = prepare(recipe, tmp_path / "data", workers=1)
    assert len(manifest["texts"]) == 6  # train and val of three languages, not 2 x 12
    data = open_prepared(recipe, tmp_path / "data")
    tokenizer = data.src_tokenizer
    token_ids = {lang: tokenizer.piece_id(language_token(lang)) for lang in LANGS}
    for lang, token in token_ids.items():  # one piece each, never split
        assert tokenizer.encode([language_token(lang)])[0][-1] == token

    starts = data.train.starts
    for corpus, start in zip(data.train.corpora, starts, strict=True):
        target = corpus.name.split("-")[1]
        src, _ = data.train.pair(int(start))
        assert src[0] == token_ids[target]
        assert src[1:].tolist() == corpus.src.line(int(corpus.kept[0])).tolist()
    batch = data.train.collate([int(starts[1]), int(starts[4])])
    assert batch.src[:, 0].tolist() == [token_ids[data.train.corpora[i].name.split("-")[1]] for i in (1, 4)]
    for valid in data.valid:
        assert {ids[0] for ids in valid.src_ids} == {token_ids[valid.direction[1]]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["tokenizer"].update(joint=False, vocab_size=100), "tokenizer.joint"),
        (
            lambda r: r["data"]["train"][1].update(weight=0),
            "data.train.1.weight: Input should be greater than 0",
        ),
        (
            lambda r: r["data"]["valid"][1].update(src_lang="fr"),
            "data.valid.1: direction fr-en is not trained",
        ),
        (lambda r: r["data"]["train"][0].update(size=3), "data.train.0.size: unknown key"),
        (lambda r: r["data"]["train"][0].update(src_lang="english"), "data.train.0.src_lang"),
        (lambda r: r["data"]["train"][2].pop("tgt_lang"), "data.train.2.tgt_lang: Field required"),
        (
            lambda r: r["data"]["train"][1].update(name="en-de"),
            "data.train.1.name: 'en-de' names two corpora",
        ),
    ],
)
def test_recipe_mistakes_name_the_key(three_way, tmp_path, change, message):
    raw = multilingual(three_way, tmp_path / "run")
    raw["model"]["share_embeddings"] = False
    change(raw)
    with pytest.raises(ConfigError, match=message):
        parse_recipe(raw)


def test_misaligned_files_are_one_line_naming_both(three_way, tmp_path):
    short = tmp_path / "short.fr"
    short.write_text("une ligne\n", encoding="utf-8")
    raw = multilingual(three_way, tmp_path / "run")
    raw["data"]["train"][2]["tgt"] = str(short)
    path = write_recipe(tmp_path / "recipe.yaml", raw)
    result = run_nmt("data", "prepare", "--config", str(path), check=False)
    assert_one_line_error(result, str(three_way / "train.en"), "300 lines", str(short), "data.train.2")
    assert not (tmp_path / "run" / "data" / MANIFEST).exists()


def test_multilingual_training_end_to_end_and_resume_reuses_the_prepared_data(three_way, tmp_path):
    raw = multilingual(three_way, tmp_path / "run")
    raw["train"].update(max_steps=4, save_every_steps=2, eval_max_sentences=4)
    path = write_recipe(tmp_path / "recipe.yaml", raw)
    first = run_nmt("train", "--config", str(path))
    assert "preparing the data in" in first.stderr
    bundle = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text(encoding="utf-8"))
    assert bundle["directions"] == [["de", "en"], ["en", "de"], ["en", "fr"]]
    assert bundle["language_tokens"] is True
    assert "src_lang" not in bundle and "tgt_lang" not in bundle
    assert set(bundle["scores"]) == {"de-en", "en-de", "en-fr"}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"][-1]
    assert set(valid["sets"]) == {"en-de", "de-en", "en-fr"}
    assert valid["bleu"] == pytest.approx(sum(s["bleu"] for s in valid["sets"].values()) / 3)

    raw["train"]["max_steps"] = 6
    path = write_recipe(tmp_path / "recipe.yaml", raw)
    ids = sorted((tmp_path / "run" / "data").glob("text-*.ids"))
    stamps = [p.stat().st_mtime_ns for p in ids]
    second = run_nmt("train", "--config", str(path), "--resume")
    assert "using the prepared data" in second.stderr and "preparing" not in second.stderr
    assert [p.stat().st_mtime_ns for p in ids] == stamps


def test_bilingual_bundle_keeps_its_languages_and_lists_its_direction(trained_bundles):
    bundle = json.loads((trained_bundles["transformer"] / "bundle.json").read_text(encoding="utf-8"))
    assert (bundle["src_lang"], bundle["tgt_lang"]) == ("en", "de")
    assert bundle["directions"] == [["en", "de"]]
    assert bundle["language_tokens"] is False


def test_missing_prepared_folder_is_a_data_error(tiny_corpus, tmp_path):
    recipe = parse_recipe(bilingual(tiny_corpus, tmp_path / "run"))
    with pytest.raises(DataError, match="nmt data prepare"):
        open_prepared(recipe, tmp_path / "nowhere")
