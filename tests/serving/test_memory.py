"""The translation memory over real HTTP against `nmt serve`: approved translations replace the
model's per sentence, with origin "memory"; keys with the memory permission; Redis (a real
redis-server) keeps entries without expiry, and its outage slows translation, never breaks it."""

from __future__ import annotations

import json

import redis

from tests.serving.conftest import metric

MODEL = "tiny-transformer"
SENTENCE = "A man in a blue shirt is standing on a ladder."
OTHER = "Two dogs play in the snow."


def entry(**changes) -> dict:
    return {
        "source": "en",
        "target": "de",
        "text": SENTENCE,
        "translation": "Genehmigte Übersetzung.",
        **changes,
    }


def translate(client, text, **body):
    answer = client.post("/v1/translate", json={"source": "en", "target": "de", "text": text, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()["translations"]


def test_an_approved_translation_is_returned_per_sentence_until_deleted(serve):
    server = serve()
    with server.client() as client:
        [before] = translate(client, SENTENCE, model=MODEL)
        assert before["origin"] == "model" and 0.0 <= before["confidence"] <= 1.0
        assert isinstance(before["low_confidence"], bool)
        put = client.put("/v1/memory", json=entry())
        assert put.status_code == 200, put.text
        # the sentence matches normalised: whitespace collapsed (case kept)
        [after] = translate(client, "  A man in a  blue shirt\tis standing on a ladder. ", model=MODEL)
        assert after["text"] == "Genehmigte Übersetzung." and after["origin"] == "memory"
        assert after["confidence"] == 1.0 and after["low_confidence"] is False
        [upper] = translate(client, SENTENCE.upper(), model=MODEL)
        assert upper["origin"] == "model"
        # a text of two sentences takes the memory's for the one it has
        [mixed] = translate(client, f"{OTHER} {SENTENCE}", model=MODEL)
        [other] = translate(client, OTHER, model=MODEL)
        assert mixed["text"] == f"{other['text']} Genehmigte Übersetzung." and mixed["origin"] == "model"
        # and the stream, per sentence
        stream = client.post(
            "/v1/translate/stream",
            json={"source": "en", "target": "de", "text": f"{SENTENCE} {OTHER}", "model": MODEL},
        )
        origins = [json.loads(line[6:])["origin"] for line in stream.text.splitlines() if '"index"' in line]
        assert origins == ["memory", "model"]
        # LibreTranslate's endpoint uses it too
        libre = client.post("/translate", json={"q": SENTENCE, "source": "en", "target": "de"})
        assert libre.json()["translatedText"] == "Genehmigte Übersetzung."
        got = client.get("/v1/memory", params={"source": "en", "target": "de", "text": SENTENCE})
        assert got.status_code == 200 and got.json()["translation"] == "Genehmigte Übersetzung."
        gone = client.delete("/v1/memory", params={"source": "en", "target": "de", "text": SENTENCE})
        assert gone.status_code == 200, gone.text
        [again] = translate(client, SENTENCE, model=MODEL)
        assert again["origin"] == "model" and again["text"] == before["text"]
        missing = client.get("/v1/memory", params={"source": "en", "target": "de", "text": SENTENCE})
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "text"


def test_an_entry_for_one_model_family_applies_to_that_model_only(serve):
    server = serve()
    with server.client() as client:
        assert client.put("/v1/memory", json=entry(model=MODEL, translation="Nur hier.")).status_code == 200
        [own] = translate(client, SENTENCE, model=MODEL)
        [other] = translate(client, SENTENCE, model="tiny-lstm_attention")
    assert own["text"] == "Nur hier." and other["origin"] == "model"


def test_bad_memory_entries_are_refused_naming_the_field(serve):
    server = serve(max_chars="200")
    with server.client() as client:
        cases = [
            (entry(target="fr"), 400, "target"),
            (entry(source="xx"), 400, "source"),
            (entry(model="tiny-nothing"), 400, "model"),
            (entry(text="   "), 422, "text"),
            (entry(translation=""), 422, "translation"),
            (entry(text="a" * 201), 422, "text"),
            (entry(translation="b" * 201), 422, "translation"),
            (entry(text=f"{SENTENCE} {OTHER}"), 422, "text"),
            ({"source": "en", "target": "de", "text": SENTENCE}, 422, "translation"),
            (entry(extra=1), 422, "extra"),
        ]
        for body, status, field in cases:
            answer = client.put("/v1/memory", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["error"]["field"] == field, (body, answer.text)
        query = client.get("/v1/memory", params={"source": "en", "target": "de"})
        assert query.status_code == 422 and query.json()["error"]["field"] == "text"
        assert (
            client.put("/v1/memory", content=b"{", headers={"content-type": "application/json"}).status_code
            == 400
        )


def test_writes_need_a_memory_key_when_keys_are_set(serve):
    server = serve(api_keys="reader", memory_keys="editor")
    with server.client() as client:
        anonymous = client.put("/v1/memory", json=entry())
        assert anonymous.status_code == 401
        reader = client.put("/v1/memory", json=entry(), headers={"Authorization": "Bearer reader"})
        assert reader.status_code == 403 and reader.json()["error"]["field"] == "Authorization"
        editor = client.put("/v1/memory", json=entry(), headers={"Authorization": "Bearer editor"})
        assert editor.status_code == 200, editor.text
        read = client.get(
            "/v1/memory",
            params={"source": "en", "target": "de", "text": SENTENCE},
            headers={"Authorization": "Bearer reader"},
        )
        assert read.status_code == 200
        models = client.get("/v1/models", headers={"Authorization": "Bearer reader"}).json()
        assert models["memory"] == {"store": "memory", "writes_need_key": True}


def test_redis_keeps_the_memory_without_expiry_and_its_outage_breaks_nothing(serve, redis_server):
    server = serve(redis_url=redis_server.url, redis_timeout_s="0.2", redis_retry_s="0.5")
    with server.client() as client:
        assert client.put("/v1/memory", json=entry()).status_code == 200
        store = redis.Redis.from_url(redis_server.url)
        [key] = store.keys("nmt:tm:*")
        assert store.ttl(key) == -1  # no expiry
        mgets = store.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
        [found] = translate(client, SENTENCE, model=MODEL)
        assert found["origin"] == "memory"
        # the memory and the cache were read in one MGET
        assert store.info("commandstats")["cmdstat_mget"]["calls"] == mgets + 1
        redis_server.stop()
        [fallback] = translate(client, SENTENCE, model=MODEL)  # a miss: the model translates
        assert fallback["origin"] == "model"
        down = client.put("/v1/memory", json=entry())
        assert down.status_code == 503 and down.json()["error"]["type"] == "unavailable"
        assert "Retry-After" in down.headers
        assert metric(client.get("/metrics").text, "nmt_redis_errors_total") >= 1
