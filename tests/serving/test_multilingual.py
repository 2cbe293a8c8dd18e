"""A multilingual bundle beside a bilingual one, over real HTTP against `nmt serve`: every declared
direction routed, /languages and /v1/models, per-direction cache keys, A/B per pair, the defaults
by recorded BLEU, and requests for directions a bundle does not serve."""

from __future__ import annotations

import collections
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt.bundle import load_bundle, record_scores
from nmt.confidence import translate_checked
from nmt.engines import Choice
from nmt.languages import Direction
from nmt.translator import Translator
from serving.registry import ModelEntry, Registry
from tests.conftest import run_nmt
from tests.serving.conftest import Server, start_server, stop_server

MULTI, BILINGUAL = "tiny-multi-transformer", "tiny-transformer"
SIX = ["de-en", "de-fr", "en-de", "en-fr", "fr-de", "fr-en"]


@pytest.fixture(scope="module")
def mixed_models(multilingual_bundle, trained_bundles, tmp_path_factory) -> Path:
    """The tiny multilingual Transformer and the tiny bilingual en-de one, with ONNX exports."""
    folder = tmp_path_factory.mktemp("mixed-models")
    for name, source in ((MULTI, multilingual_bundle), (BILINGUAL, trained_bundles["transformer"])):
        shutil.copytree(source, folder / name)
        run_nmt("export", "--model", str(folder / name), "--format", "onnx")
    return folder


@pytest.fixture(scope="module")
def mixed_server(mixed_models, tmp_path_factory) -> Iterator[Server]:
    split = json.dumps({"en-de": {MULTI: 50, BILINGUAL: 50}})
    server = start_server(mixed_models, tmp_path_factory.mktemp("mixed"), ab_split=split)
    yield server
    stop_server(server)


def post(client, source, target, **body):
    return client.post("/v1/translate", json={"source": source, "target": target, **body})


def test_languages_and_models_list_every_direction(mixed_server):
    with mixed_server.client() as client:
        languages = {item["code"]: item["targets"] for item in client.get("/languages").json()}
        models = client.get("/v1/models").json()
    assert languages == {"de": ["en", "fr"], "en": ["de", "fr"], "fr": ["de", "en"]}
    described = {m["name"]: m for m in models["models"]}
    assert sorted("-".join(d) for d in described[MULTI]["directions"]) == SIX
    assert described[MULTI]["source"] is None and described[MULTI]["language_tokens"] is True
    assert described[BILINGUAL]["directions"] == [["en", "de"]] and described[BILINGUAL]["source"] == "en"
    # no scores recorded: today's rule, the preferred kind (both Transformers), then by name
    assert models["defaults"] == dict.fromkeys(SIX, MULTI)
    assert models["ab_split"] == {"en-de": {MULTI: 50, BILINGUAL: 50}}


def test_every_direction_translates_with_its_token(mixed_server, mixed_models):
    translator = Translator.from_bundle(load_bundle(mixed_models / MULTI), backend="onnx")
    text = "Two dogs play in the snow."
    with mixed_server.client() as client:
        for pair in SIX:
            source, target = pair.split("-")
            response = post(client, source, target, text=text, model=MULTI)
            assert response.status_code == 200, response.text
            [item] = response.json()["translations"]
            assert item["model"] == MULTI
            expected = translate_checked(translator, [text], translator.search, target=target)[0]
            assert item["text"] == expected.text  # degenerate output decoded again, as served


def test_the_cache_keeps_directions_apart(mixed_server):
    text = "A girl in a yellow dress climbs a wall."
    with mixed_server.client() as client:
        into_de = post(client, "en", "de", text=text, model=MULTI).json()["translations"][0]
        into_fr = post(client, "en", "fr", text=text, model=MULTI).json()["translations"][0]
        again = post(client, "en", "fr", text=text, model=MULTI).json()["translations"][0]
    assert into_de["cached"] is False and into_fr["cached"] is False  # en-fr never served en-de's
    assert again["cached"] is True and again["text"] == into_fr["text"] != into_de["text"]


def test_ab_split_per_pair_mixes_multilingual_and_bilingual(mixed_server):
    seen = collections.Counter()
    with mixed_server.client() as client:
        for i in range(24):
            headers = {"X-Client-Id": f"client-{i}"}
            response = client.post(
                "/v1/translate", json={"source": "en", "target": "de", "text": "A man."}, headers=headers
            )
            assert response.status_code == 200, response.text
            seen[response.headers["X-Model-Variant"]] += 1
            again = client.post(
                "/v1/translate", json={"source": "en", "target": "de", "text": "A dog."}, headers=headers
            )
            assert again.headers["X-Model-Variant"] == response.headers["X-Model-Variant"]  # sticky
        # a pair without a split goes to its default, the multilingual model
        for i in range(4):
            other = client.post(
                "/v1/translate",
                json={"source": "de", "target": "en", "text": "Ein Mann."},
                headers={"X-Client-Id": f"client-{i}"},
            )
            assert other.headers["X-Model-Variant"] == MULTI
        report = client.get("/v1/ab/report").json()
    assert set(seen) == {MULTI, BILINGUAL}
    assert set(report["pairs"]["en-de"]) == {MULTI, BILINGUAL}


def test_libretranslate_serves_every_direction(mixed_server):
    with mixed_server.client() as client:
        response = client.post("/translate", json={"q": "Ein Hund.", "source": "de", "target": "fr"})
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Variant"] == MULTI
        unknown = client.post("/translate", json={"q": "Ein Hund.", "source": "de", "target": "es"})
    assert unknown.status_code == 400 and "'es'" in unknown.json()["error"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"source": "en", "target": "es"}, "target", "no model translates 'en' into 'es'"),
        ({"source": "es", "target": "en"}, "source", "unsupported source language 'es'"),
        ({"source": "en", "target": "fr", "model": BILINGUAL}, "model", "translates en-de, not en-fr"),
        ({"source": "en", "target": "en", "model": MULTI}, "model", "not en-en"),
    ],
)
def test_directions_not_served_are_400s_naming_the_field(mixed_server, body, field, words):
    with mixed_server.client() as client:
        response = client.post("/v1/translate", json={"text": "A man.", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"]


def _entries(folder: Path) -> list[ModelEntry]:
    """Registry entries without translators or batchers: routing only looks at the bundles."""
    entries = []
    for path in sorted(folder.iterdir()):
        bundle = load_bundle(path)
        choice = Choice("torch", "routing test")
        entries.append(ModelEntry(bundle, None, None, choice, bundle.directions[0]))  # type: ignore[arg-type]
    return entries


def test_a_pair_defaults_to_the_higher_recorded_bleu(mixed_models, tmp_path):
    folder = Path(shutil.copytree(mixed_models, tmp_path / "models"))
    measured = {"bleu": 0.0, "sentences": 1}  # recorded as `nmt evaluate --record` does
    record_scores(folder / MULTI, "test_2016_flickr", measured, Direction("en", "de"))
    record_scores(folder / MULTI, "test_2016_flickr", measured, Direction("de", "en"))
    record_scores(folder / BILINGUAL, "test_2016_flickr", {**measured, "bleu": 1.0})
    registry = Registry(_entries(folder), {})
    # en-de: the bilingual one scores higher; de-en: only the multilingual one serves it
    assert registry.defaults["en-de"].name == BILINGUAL and registry.defaults["de-en"].name == MULTI
    assert registry.route("en", "de", None, None).name == BILINGUAL
    routed = registry.route("de", "fr", MULTI, None)
    assert routed.pair == "de-fr" and routed.translator is registry.entries[MULTI].translator
    # the higher score wins, whichever bundle has it
    record_scores(folder / BILINGUAL, "test_2016_flickr", {**measured, "bleu": 0.0})
    record_scores(folder / MULTI, "test_2016_flickr", {**measured, "bleu": 2.0}, Direction("en", "de"))
    assert Registry(_entries(folder), {}).defaults["en-de"].name == MULTI
    with pytest.raises(Exception, match="NMT_AB_SPLIT: en-fr has no model named 'tiny-transformer'"):
        Registry(_entries(folder), {"en-fr": {BILINGUAL: 1.0}})
