"""README's main job: `nmt serve` on the shipped models/ folder, as `make serve` runs it. Every
bundle loads on the engine `auto` picks (exports the folder lacks are made at start-up), en-de's
default is the bundle with the best recorded test BLEU, and the features that need a beam or
alignments work on it even where it decodes greedily on CTranslate2."""

from __future__ import annotations

import httpx
import pytest

from nmt.bundle import load_bundle
from nmt.languages import Direction
from tests.conftest import SHIPPED_MODELS
from tests.serving.conftest import start_server, stop_server

PAIRS = ("en-de", "de-en", "en-fr", "fr-en", "de-fr", "fr-de")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    server = start_server(SHIPPED_MODELS, tmp_path_factory.mktemp("shipped"))
    yield server
    stop_server(server)


def _best_recorded(pair: str) -> str:
    """The bundle serving `pair` with the best recorded test_2016_flickr BLEU for it, a Transformer
    on a tie."""
    direction = Direction(*pair.split("-"))
    found = []
    for meta_file in SHIPPED_MODELS.glob("*/bundle.json"):
        bundle = load_bundle(meta_file.parent, verify=False)
        if bundle.translates(direction):
            bleu = bundle.scores(direction)["test_2016_flickr"]["bleu"]
            found.append((-bleu, bundle.model_config.arch != "transformer", bundle.name))
    return min(found)[2]


def test_the_shipped_models_are_served_each_on_its_engine(shipped):
    models = httpx.get(shipped.url + "/v1/models").json()
    names = sorted(path.parent.name for path in SHIPPED_MODELS.glob("*/bundle.json"))
    assert sorted(m["name"] for m in models["models"]) == names
    for pair in PAIRS:
        assert models["defaults"][pair] == _best_recorded(pair), pair
    for model in models["models"]:
        assert model["backend"] in ("onnx", "ctranslate2", "torch") and model["backend_reason"]
        if model["backend"] == "ctranslate2":
            assert model["alignment_backend"] == "onnx"


def test_every_pair_between_english_german_and_french_translates(shipped):
    """The six-direction bundle serves the pairs no bilingual one does; LibreTranslate's
    /languages lists them."""
    languages = {
        entry["code"]: set(entry["targets"]) for entry in httpx.get(shipped.url + "/languages").json()
    }
    for pair in PAIRS:
        source, target = pair.split("-")
        assert target in languages[source], pair
    expected = {"en": "dog", "de": "hund", "fr": "chien"}
    texts = {
        "en": "A dog runs in the snow.",
        "de": "Ein Hund rennt im Schnee.",
        "fr": "Un chien court dans la neige.",
    }
    for pair in PAIRS:
        source, target = pair.split("-")
        item = httpx.post(
            shipped.url + "/v1/translate",
            json={"text": texts[source], "source": source, "target": target},
            timeout=60,
        ).json()["translations"][0]
        assert expected[target] in item["text"].lower(), (pair, item)


def test_the_default_gives_alternatives_html_and_confidence(shipped):
    answer = httpx.post(
        shipped.url + "/translate",
        json={"q": "Two dogs play in the snow.", "source": "en", "target": "de", "alternatives": 2},
        timeout=60,
    ).json()
    assert "Hunde" in answer["translatedText"] and len(answer["alternatives"]) == 2
    item = httpx.post(
        shipped.url + "/v1/translate",
        json={"text": "A man in a <b>red</b> hat.", "source": "en", "target": "de", "format": "html"},
        timeout=60,
    ).json()["translations"][0]
    assert "<b>" in item["text"] and "</b>" in item["text"] and "Mann" in item["text"]
    plain = httpx.post(
        shipped.url + "/v1/translate",
        json={"text": "A man in a red hat.", "source": "en", "target": "de"},
        timeout=60,
    ).json()["translations"][0]
    assert plain["model"] == _best_recorded("en-de") and 0.0 <= plain["confidence"] <= 1.0
