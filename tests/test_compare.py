"""`nmt compare`: paired bootstrap against a baseline, the written report, and its bad inputs."""

from __future__ import annotations

import json
import shutil

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
    (french / "bundle.json").write_text(json.dumps(meta | {"src_lang": "fr"}))
    result = run_nmt("compare", "--models", model, str(french), "--src", src, "--ref", ref, check=False)
    assert_one_line_error(result, "fr->de", "en->de")

    result = run_nmt(
        "compare", "--models", model, "--src", src, "--ref", ref, "--baseline", "nobody", check=False
    )
    assert_one_line_error(result, "--baseline nobody")
