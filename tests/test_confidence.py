"""Confidence: degenerate-output detection, the logistic calibration and its storage in a bundle,
`nmt calibrate`, and the target on the default bundle: in-domain test_2016_flickr against everyday
sentences, ROC AUC >= 0.85."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nmt.bundle import load_bundle
from nmt.confidence import (
    Calibration,
    Scorer,
    degenerate,
    features,
    fit_calibration,
    roc_auc,
    translate_checked,
)
from nmt.data import read_lines
from nmt.translator import Translator
from tests.conftest import DEFAULT_BUNDLE, ROOT, assert_one_line_error, run_nmt

EVERYDAY = ROOT / "benchmarks" / "data" / "everyday.en"


@pytest.mark.parametrize(
    "text",
    [
        "Ein Hin, wie man man man du du du du du du?",
        "Der Zug, der versucht, von Trannnnnnnnnnnnnnn",
        "in der Stadt in der Stadt in der Stadt",
        "I I I Intttttt, um sich nachts zu sein.",
    ],
)
def test_degenerate_output_is_detected(text):
    assert degenerate(text)


@pytest.mark.parametrize(
    "text",
    [
        "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
        "Die Schifffahrt kostet 1000000 Euro.",  # three f, and digits are no letters
        "im Schnee, im Schnee",  # twice is no loop
        "",
    ],
)
def test_fluent_output_is_not_degenerate(text):
    assert not degenerate(text)


def test_roc_auc_counts_ordered_pairs_and_ties_as_half():
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.2, 0.7], [True, False, False, True]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_the_calibration_learns_a_separable_set_and_survives_a_round_trip():
    rng = np.random.default_rng(0)
    good = rng.random(400) < 0.5
    rows = np.column_stack(
        [np.where(good, -1.0, -6.0) + rng.normal(0, 1, 400), np.zeros(400), rng.random(400)]
    )
    fitted = fit_calibration(rows, good)
    assert fitted.weights[0] > 0 and fitted.weights[1] == 0.0  # a constant feature gets no weight
    assert roc_auc([fitted.confidence(r) for r in rows], good) > 0.95
    again = Calibration.from_meta(json.loads(json.dumps(fitted.to_meta())))
    assert again is not None and again.confidence(rows[0]) == pytest.approx(
        fitted.confidence(rows[0]), abs=1e-5
    )
    # another feature set, or a torn one, is no calibration: the fallback serves
    assert Calibration.from_meta({**fitted.to_meta(), "features": ["score"]}) is None
    assert Calibration.from_meta({**fitted.to_meta(), "std": [0, 1, 1]}) is None
    assert Calibration.from_meta(None) is None
    fallback = Scorer.for_meta({})
    assert fallback.calibration is None
    assert fallback.confidence("a b", "x y", 0.0) == 1.0
    assert fallback.confidence("a b", "x x x x", 0.0) == 0.5  # degenerate: halved
    assert 0 < fallback.confidence("a", "b", float("-inf")) < 1e-9


def test_features_are_finite_for_empty_translations():
    assert all(np.isfinite(features("A dog.", "", float("-inf"))))


def test_nmt_calibrate_stores_the_calibration_and_keeps_the_version(
    tmp_path, trained_bundles, tiny_corpus, multi30k
):
    bundle = shutil.copytree(
        DEFAULT_BUNDLE, tmp_path / "bundle", ignore=shutil.ignore_patterns("onnx", "ct2")
    )
    meta = json.loads((bundle / "bundle.json").read_text())
    del meta["confidence"]
    (bundle / "bundle.json").write_text(json.dumps(meta))
    assert Scorer.for_meta(load_bundle(bundle).meta).calibration is None
    val = multi30k
    src, ref = tmp_path / "val.en", tmp_path / "val.de"
    src.write_text("\n".join(read_lines(val / "val.en.gz")[:150]) + "\n")
    ref.write_text("\n".join(read_lines(val / "val.de.gz")[:150]) + "\n")
    out = run_nmt("calibrate", "--model", str(bundle), "--src", str(src), "--ref", str(ref)).stdout
    assert "confidence calibrated on 150 sentences" in out and "ROC AUC" in out
    loaded = load_bundle(bundle)  # the version still checks out
    assert loaded.version == meta["version"]
    assert Scorer.for_meta(loaded.meta).calibration is not None
    missing = run_nmt(
        "calibrate", "--model", str(bundle), "--src", str(src), "--ref", str(tmp_path / "no.de"), check=False
    )
    assert_one_line_error(missing, "no.de")
    # a tiny model translates every sentence badly: nothing to fit, said in one line
    tiny = shutil.copytree(trained_bundles["transformer"], tmp_path / "tiny")
    corpus = [str(tiny_corpus / "val.en"), "--ref", str(tiny_corpus / "val.de")]
    assert_one_line_error(run_nmt("calibrate", "--model", str(tiny), "--src", *corpus, check=False), "bad")


def test_every_shipped_bundle_is_calibrated():
    for path in sorted((ROOT / "models").glob("*/bundle.json")):
        meta = json.loads(path.read_text())
        assert Scorer.for_meta(meta).calibration is not None, path.parent.name


def test_confidence_separates_in_domain_from_everyday_sentences_on_the_default_bundle(
    multi30k, default_exported
):
    """The target: ROC AUC >= 0.85 (all three bundles: benchmarks/confidence.py)."""
    bundle = load_bundle(default_exported)
    translator = Translator.from_bundle(bundle, "cpu", "onnx")
    scorer = Scorer.for_meta(bundle.meta)
    in_domain = read_lines(multi30k / "test_2016_flickr.en.gz")
    everyday = read_lines(EVERYDAY)
    assert len(everyday) >= 100
    texts = in_domain + everyday
    best = translate_checked(translator, texts, bundle.search)
    confidence = [scorer.confidence(s, t.text, t.score) for s, t in zip(texts, best, strict=True)]
    auc = roc_auc(confidence, [True] * len(in_domain) + [False] * len(everyday))
    print(
        f"{bundle.name}: confidence ROC AUC {auc:.3f} over {len(in_domain)} test_2016_flickr vs "
        f"{len(everyday)} everyday sentences (target 0.85)"
    )
    assert auc >= 0.85
