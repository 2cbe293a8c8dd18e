"""`nmt compare`: paired bootstrap against a baseline, BLEU by source length, translations read
from files, the written report, and its bad inputs."""

from __future__ import annotations

import gzip
import json
import shutil

from sacrebleu.metrics import BLEU

from nmt.compare import System, bleu_by_length, chart, length_buckets, length_labels
from tests.conftest import assert_one_line_error, run_nmt


def test_compare_three_architectures(trained_bundles, tiny_corpus, tmp_path):
    models = [str(trained_bundles[a]) for a in ("transformer", "lstm", "lstm_attention")]
    result = run_nmt(
        "compare",
        "--models",
        *models,
        "--src",
        str(tiny_corpus / "test_2016_flickr.en"),
        "--ref",
        str(tiny_corpus / "test_2016_flickr.de"),
        "--baseline",
        "tiny-lstm",
        "--out",
        str(tmp_path),
        "--samples",
        "200",
    )
    assert "| tiny-lstm | lstm |" in result.stdout
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["baseline"] == "tiny-lstm"
    assert [s["name"] for s in report["systems"]] == ["tiny-lstm", "tiny-transformer", "tiny-lstm_attention"]
    baseline, *others = report["systems"]
    assert baseline["BLEU"]["p_value"] is None
    for system in others:
        assert 0.0 <= system["BLEU"]["p_value"] <= 1.0
        assert system["BLEU"]["ci"] >= 0.0 and system["sentences_per_s"] > 0 and system["size_bytes"] > 0
    assert "bs:200" in report["signatures"]["BLEU"] and "case:mixed" in report["signatures"]["BLEU"]
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert "Where the systems differ most" in (tmp_path / "compare.md").read_text()


def test_compare_bad_inputs(trained_bundles, tiny_corpus, tmp_path):
    model = str(trained_bundles["lstm"])
    src, ref = str(tiny_corpus / "test_2016_flickr.en"), str(tiny_corpus / "test_2016_flickr.de")

    short = tmp_path / "short.de"
    short.write_text("eine Zeile\n")
    assert_one_line_error(
        run_nmt("compare", "--models", model, "--src", src, "--ref", str(short), check=False), "short.de"
    )

    empty_src, empty_ref = tmp_path / "empty.en", tmp_path / "empty.de"
    empty_src.write_text("")
    empty_ref.write_text("")
    result = run_nmt(
        "compare", "--models", model, "--src", str(empty_src), "--ref", str(empty_ref), check=False
    )
    assert_one_line_error(result, "empty")

    result = run_nmt("compare", "--models", model, "--src", ref, "--ref", src, check=False)
    assert_one_line_error(result, "'de'", "en->de")

    french = tmp_path / "french"
    shutil.copytree(model, french)
    meta = json.loads((french / "bundle.json").read_text())
    (french / "bundle.json").write_text(json.dumps(meta | {"src_lang": "fr", "directions": [["fr", "de"]]}))
    result = run_nmt("compare", "--models", model, str(french), "--src", src, "--ref", ref, check=False)
    assert_one_line_error(result, "fr->de", "en->de")

    result = run_nmt(
        "compare", "--models", model, "--src", src, "--ref", ref, "--baseline", "nobody", check=False
    )
    assert_one_line_error(result, "--baseline nobody")


def test_length_buckets_put_the_edges_in_the_lower_bucket():
    src = ["", "one", "a b c", "a b c d", "a  b\tc d e", " ".join("w" * 7), " ".join("w" * 30)]
    # words:  0,  1,     3,       4,          5 (any whitespace), 7,             30
    assert length_buckets(src, (3, 5, 20)) == [[0, 1, 2], [3, 4], [5], [6]]
    assert length_labels((3, 5, 20)) == ["1-3", "4-5", "6-20", "21+"]
    assert length_labels((1, 2)) == ["1", "2", "3+"]


def test_bleu_by_length_scores_each_bucket_and_leaves_empty_ones_blank():
    src = ["a b", "a b c", "a b c d e f"]
    refs = ["Ein Hund läuft .", "Zwei Männer sitzen auf einer Bank .", "Eine Frau liest ein Buch im Park ."]
    hyps = ["Ein Hund läuft .", "Zwei Männer stehen vor einer Bank .", "Eine Frau liest im Park ."]
    signature, (buckets,) = bleu_by_length([System("ours", hyps)], src, refs, (3, 4, 10))
    assert [(b["words"], b["sentences"]) for b in buckets] == [("1-3", 2), ("4", 0), ("5-10", 1), ("11+", 0)]
    assert buckets[0]["BLEU"] == round(BLEU().corpus_score(hyps[:2], [refs[:2]]).score, 4)
    assert buckets[2]["BLEU"] == round(BLEU().corpus_score(hyps[2:], [refs[2:]]).score, 4)
    assert 0 < buckets[0]["BLEU"] < 100 and buckets[1]["BLEU"] is None and buckets[3]["BLEU"] is None
    assert "tok:13a" in signature and "bs:" not in signature


def test_chart_has_a_panel_of_bleu_by_length():
    buckets = [
        {"words": "1-10", "sentences": 3, "BLEU": 40.0},
        {"words": "11+", "sentences": 0, "BLEU": None},
    ]
    rows = [
        {"name": name, "BLEU": {"mean": 40.0, "ci": 1.0}, "bleu_by_length": buckets} for name in ("a", "b")
    ]
    fig = chart(rows, "test.en -> test.de")
    overall, by_length = fig.axes
    assert overall.get_title() == "test.en -> test.de" and by_length.get_title() == "BLEU by source length"
    assert [t.get_text() for t in by_length.get_xticklabels()] == ["1-10\n(n=3)", "11+\n(n=0)"]
    assert [line.get_label() for line in by_length.get_lines()] == ["a", "b"]


def test_compare_translations_from_files(trained_bundles, tiny_corpus, tmp_path):
    """A model beside two files of translations (one of them gzipped, one the reference itself),
    the baseline picked by a file's name; buckets 1-5 and 31+ hold none of the 24 sentences."""
    src, ref = tiny_corpus / "test_2016_flickr.en", tiny_corpus / "test_2016_flickr.de"
    elsewhere = tmp_path / "elsewhere.de.gz"
    with gzip.open(elsewhere, "wt", encoding="utf-8") as handle:
        handle.write("".join(line.replace("ein", "eine") + "\n" for line in ref.read_text().splitlines()))
    out = tmp_path / "out"
    result = run_nmt(
        "compare",
        "--models",
        str(trained_bundles["lstm"]),
        "--hyps",
        f"elsewhere={elsewhere}",
        f"oracle={ref}",
        "--src",
        str(src),
        "--ref",
        str(ref),
        "--baseline",
        "elsewhere",
        "--length-buckets",
        "5,10,15,30",
        "--samples",
        "100",
        "--out",
        str(out),
    )
    assert "| oracle | - | 100.00 (±0.00) |" in result.stdout
    report = json.loads((out / "compare.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["elsewhere", "tiny-lstm", "oracle"]
    elsewhere_row, model_row, oracle_row = report["systems"]
    assert elsewhere_row["BLEU"]["p_value"] is None and 0.0 <= oracle_row["BLEU"]["p_value"] <= 1.0
    assert elsewhere_row["hypotheses"] == str(elsewhere) and "sentences_per_s" not in elsewhere_row
    assert model_row["sentences_per_s"] > 0 and model_row["parameters"] > 0 and "architecture" in model_row
    assert 0 < elsewhere_row["BLEU"]["score"] < oracle_row["BLEU"]["score"] == 100.0

    buckets = report["length_buckets"]
    assert buckets["unit"] == "source words (whitespace split)" and buckets["edges"] == [5, 10, 15, 30]
    assert [(b["words"], b["sentences"]) for b in buckets["buckets"]] == [
        ("1-5", 0),
        ("6-10", 11),
        ("11-15", 9),
        ("16-30", 4),
        ("31+", 0),
    ]
    assert "tok:13a" in buckets["signature"]
    assert [b["BLEU"] for b in oracle_row["bleu_by_length"]] == [None, 100.0, 100.0, 100.0, None]
    assert all(b["BLEU"] is not None for b in elsewhere_row["bleu_by_length"][1:4])

    md = (out / "compare.md").read_text()
    assert "| source words | sentences | elsewhere | tiny-lstm | oracle |" in md
    assert "| 1-5 | 0 | - | - | - |" in md and "| 16-30 | 4 | " in md
    assert "| oracle | - | 100.00 (±0.00) | " in md and "| - | - | - |" in md
    assert "Where the systems differ most" in md
    assert (out / "compare.png").stat().st_size > 0

    alone = run_nmt("compare", "--hyps", f"oracle={ref}", "--src", str(src), "--ref", str(ref))
    assert "| oracle | - | 100.00 (±0.00) | baseline |" in alone.stdout
    assert "| 1-10 | 11 | 100.00 |" in alone.stdout  # the default buckets


def test_compare_bad_hyps_and_length_buckets(tiny_corpus, tmp_path):
    src, ref = str(tiny_corpus / "test_2016_flickr.en"), str(tiny_corpus / "test_2016_flickr.de")
    short = tmp_path / "short.de"
    short.write_text("eine Zeile\n")
    result = run_nmt("compare", "--hyps", f"short={short}", "--src", src, "--ref", ref, check=False)
    assert_one_line_error(result, "short.de has 1 lines", "has 24")

    for spec in ("noequals", "=file.de"):
        result = run_nmt("compare", "--hyps", spec, "--src", src, "--ref", ref, check=False)
        assert_one_line_error(result, f"--hyps {spec}", "NAME=FILE")

    result = run_nmt("compare", "--hyps", f"a={ref}", f"a={ref}", "--src", src, "--ref", ref, check=False)
    assert_one_line_error(result, "--hyps a=", "already called a")

    assert_one_line_error(run_nmt("compare", "--src", src, "--ref", ref, check=False), "--models", "--hyps")

    for edges in ("10,x", "10,20,20", "0,5"):
        result = run_nmt(
            "compare",
            "--hyps",
            f"a={ref}",
            "--src",
            src,
            "--ref",
            ref,
            f"--length-buckets={edges}",
            check=False,
        )
        assert_one_line_error(result, f"--length-buckets {edges}:", "increasing whole numbers")
