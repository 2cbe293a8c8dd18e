"""LibreTranslate's API shapes, as its clients send them (JSON and urlencoded forms)."""

from __future__ import annotations

import pytest


def test_languages_lists_sources_and_targets(ab_server):
    with ab_server.client() as client:
        assert client.get("/languages").json() == [{"code": "en", "name": "English", "targets": ["de"]}]


def test_translate_json_form_list_and_alternatives(ab_server):
    with ab_server.client() as client:
        native = client.post(
            "/v1/translate",
            json={"text": "A man is cooking.", "source": "en", "target": "de", "model": "tiny-transformer"},
        ).json()["translations"][0]["text"]
        body = {"q": "A man is cooking.", "source": "en", "target": "de", "model": "tiny-transformer"}
        assert client.post("/translate", json=body).json() == {"translatedText": native}
        form = client.post(
            "/translate", data=body
        )  # application/x-www-form-urlencoded, like libretranslatepy
        assert form.json() == {"translatedText": native}
        listed = client.post("/translate", json={**body, "q": ["A man is cooking.", "A cat."]}).json()
        assert listed["translatedText"][0] == native and len(listed["translatedText"]) == 2
        alternatives = client.post("/translate", json={**body, "alternatives": 2}).json()
        assert alternatives["translatedText"] == native and len(alternatives["alternatives"]) == 2
        auto = client.post("/translate", json={**body, "source": "auto"}).json()
        assert auto["translatedText"] == native and auto["detectedLanguage"]["language"] == "en"


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({"source": "en", "target": "de"}, 400, "q"),
        ({"q": "", "source": "en", "target": "de"}, 400, "q"),
        ({"q": 5, "source": "en", "target": "de"}, 400, "q"),
        ({"q": "hi", "target": "de"}, 400, "source"),
        ({"q": "hi", "source": "en", "target": "fr"}, 400, "target"),
        ({"q": "hi", "source": "en", "target": "de", "format": "markdown"}, 400, "format"),
        ({"q": "hi", "source": "en", "target": "de", "alternatives": "many"}, 400, "alternatives"),
    ],
)
def test_errors_come_in_libretranslate_shape(ab_server, body, status, word):
    with ab_server.client() as client:
        reply = client.post("/translate", json=body)
    assert reply.status_code == status
    assert isinstance(reply.json()["error"], str) and reply.json()["error"].startswith(word)


def test_bad_content_types(ab_server):
    with ab_server.client() as client:
        malformed = client.post("/translate", content=b"{", headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and "error" in malformed.json()
        plain = client.post("/translate", content=b"q=hi", headers={"content-type": "text/plain"})
        assert plain.status_code == 415
