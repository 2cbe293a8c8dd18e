"""Language detection (issue 14, item 2): its accuracy on test_2016_flickr, POST /detect in
LibreTranslate's shape, and `source: "auto"` on /translate and /v1/translate, over real HTTP
against `nmt serve` with tiny en-de models and a tiny de-en one."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest

from serving.detect import LanguageDetector, resolve_source
from serving.errors import ApiError
from tests.conftest import run_benchmark
from tests.serving.conftest import Server, start_server, stop_server

LANGUAGES = ("en", "de", "fr")
TARGET_ACCURACY = 95.0
GERMAN = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
ENGLISH = "A little girl climbing into a wooden playhouse."


def test_detection_accuracy_on_test_2016_flickr(multi30k: Path):
    detector = LanguageDetector(LANGUAGES)
    right = total = 0
    for language in LANGUAGES:
        with gzip.open(multi30k / f"test_2016_flickr.{language}.gz", "rt", encoding="utf-8") as handle:
            sentences = [line.strip() for line in handle]
        hits = sum(detector.detect(sentence)[0].language == language for sentence in sentences)
        print(f"{language}: {100 * hits / len(sentences):.1f}% of {len(sentences)} sentences")
        right, total = right + hits, total + len(sentences)
    accuracy = 100 * right / total
    print(f"detection accuracy {accuracy:.2f}% over {total} sentences (target {TARGET_ACCURACY:g}%)")
    assert total == 3000
    assert accuracy >= TARGET_ACCURACY


def test_detector_comparison_benchmark_runs(multi30k: Path):
    """benchmarks/detect.py: py3langid beside lingua and fastText (lite), on 300 sentences here."""
    stdout = run_benchmark("detect.py", "--quick", "--data", str(multi30k))
    print(stdout)
    assert all(name in stdout for name in ("py3langid", "lingua", "fasttext lite"))
    assert stdout.strip().endswith("-> PASS")


def test_detection_is_restricted_to_the_languages_served():
    ranked = LanguageDetector(["en", "fr"]).detect(GERMAN)  # German is not served: never answered
    assert {d.language for d in ranked} == {"en", "fr"}
    assert ranked[0].confidence >= ranked[1].confidence
    assert abs(sum(d.confidence for d in ranked) - 100) < 0.5
    assert [d.as_json() for d in LanguageDetector(["en"]).detect(GERMAN)] == [
        {"language": "en", "confidence": 100.0}
    ]
    assert LanguageDetector(["xx", "yy"]).detect(GERMAN) == []  # codes py3langid does not know
    assert LanguageDetector(["de", "xx"]).known == ["de"]


def test_auto_source_names_the_detected_language_when_no_model_takes_it():
    detector = LanguageDetector(["en", "de"])
    served = {"en": ["de"], "de": ["en"]}
    assert resolve_source(detector, served, "en", [GERMAN]).language == "de"
    with pytest.raises(ApiError) as refused:
        resolve_source(detector, served, "fr", [GERMAN])
    assert (refused.value.status, refused.value.field) == (400, "source")
    assert "detected 'de'" in refused.value.message and "into fr" in refused.value.message
    with pytest.raises(ApiError, match="cannot be detected"):
        resolve_source(LanguageDetector(["xx", "yy"]), {"xx": ["en"]}, "en", [GERMAN])


@pytest.fixture(scope="module")
def two_way_server(two_way_models_dir: Path, tmp_path_factory) -> Server:
    server = start_server(two_way_models_dir, tmp_path_factory.mktemp("detect"), max_chars="300")
    yield server
    stop_server(server)


def test_detect_endpoint_answers_libretranslate_shape(two_way_server: Server):
    with two_way_server.client() as client:
        for request in ({"json": {"q": GERMAN}}, {"data": {"q": GERMAN}}, {"files": {"q": (None, GERMAN)}}):
            response = client.post("/detect", **request)
            assert response.status_code == 200, response.text
            ranked = response.json()
            assert [d["language"] for d in ranked] == ["de", "en"]  # served languages only, best first
            assert 50 < ranked[0]["confidence"] <= 100 and ranked[0]["confidence"] >= ranked[1]["confidence"]
        assert client.post("/detect", json={"q": ENGLISH}).json()[0]["language"] == "en"


@pytest.mark.parametrize(
    ("request_kwargs", "status", "needle"),
    [
        ({"json": {}}, 400, "q: required"),
        ({"json": {"q": "   "}}, 400, "q: must not be empty"),
        ({"json": {"q": 5}}, 400, "q: "),
        ({"json": {"q": "x" * 301}}, 400, "q: at most 300 characters"),
        ({"json": ["q"]}, 400, "must be a JSON object"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
        ({"content": b"q=1", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    ],
)
def test_detect_refuses_bad_input_naming_the_field(two_way_server: Server, request_kwargs, status, needle):
    response = httpx.post(two_way_server.url + "/detect", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]  # LibreTranslate's {"error": "..."}


def test_auto_source_on_both_translate_endpoints(two_way_server: Server):
    with two_way_server.client() as client:
        libre = client.post("/translate", json={"q": GERMAN, "source": "auto", "target": "en"})
        assert libre.status_code == 200, libre.text
        assert libre.json()["detectedLanguage"]["language"] == "de"
        assert libre.headers["X-Model-Variant"] == "tiny-transformer-de-en"
        native = client.post("/v1/translate", json={"text": [ENGLISH], "source": "auto", "target": "de"})
        assert native.status_code == 200, native.text
        item = native.json()["translations"][0]
        assert (
            item["detected_language"]["language"] == "en"
            and 0 <= item["detected_language"]["confidence"] <= 100
        )
        assert item["model"].startswith("tiny-") and item["model"] != "tiny-transformer-de-en"
        # no detected_language unless asked for with "auto"
        plain = client.post("/v1/translate", json={"text": ENGLISH, "source": "en", "target": "de"})
        assert "detected_language" not in plain.json()["translations"][0]
        # the detected language has no model into the target: 400 naming source, saying what was found
        refused = client.post("/v1/translate", json={"text": ENGLISH, "source": "auto", "target": "en"})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["field"] == "source" and "detected 'en'" in error["message"]
        refused = client.post("/translate", json={"q": GERMAN, "source": "auto", "target": "de"})
        assert refused.status_code == 400 and refused.json()["error"].startswith("source: detected 'de'")


def test_detect_needs_a_key_when_keys_are_set(serve):
    server = serve(api_keys="k1")
    assert httpx.post(server.url + "/detect", json={"q": ENGLISH}).status_code == 401
    keyed = httpx.post(server.url + "/detect", json={"q": ENGLISH, "api_key": "k1"})
    assert keyed.status_code == 200 and keyed.json() == [{"language": "en", "confidence": 100.0}]
