"""README's main job: `nmt serve` on the shipped models/ folder, as `make serve` runs it. Every
bundle loads on the engine `auto` picks (exports the folder lacks are made at start-up), en-de's
default is the bundle with the best recorded test BLEU, and the features that need a beam or
alignments work on it even where it decodes greedily on CTranslate2."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import SHIPPED_MODELS
from tests.serving.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    server = start_server(SHIPPED_MODELS, tmp_path_factory.mktemp("shipped"))
    yield server
    stop_server(server)


def _best_recorded(pair: str) -> str:
    """The bundle of `pair` with the best recorded test_2016_flickr BLEU, a Transformer on a tie."""
    found = []
    for meta_file in SHIPPED_MODELS.glob("*/bundle.json"):
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if f"{meta['src_lang']}-{meta['tgt_lang']}" == pair:
            bleu = meta["scores"]["test_2016_flickr"]["bleu"]
            found.append((-bleu, meta["model"]["arch"] != "transformer", meta["name"]))
    return min(found)[2]


def test_the_shipped_models_are_served_each_on_its_engine(shipped):
    models = httpx.get(shipped.url + "/v1/models").json()
    names = sorted(path.parent.name for path in SHIPPED_MODELS.glob("*/bundle.json"))
    assert sorted(m["name"] for m in models["models"]) == names
    assert models["defaults"]["en-de"] == _best_recorded("en-de")
    for model in models["models"]:
        assert model["backend"] in ("onnx", "ctranslate2", "torch") and model["backend_reason"]
        if model["backend"] == "ctranslate2":
            assert model["alignment_backend"] == "onnx"


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
