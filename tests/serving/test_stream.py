"""POST /v1/translate/stream over real HTTP against `nmt serve`: one server-sent event per sentence,
in order, then `done`; errors before the stream are 4xx JSON; a client that goes away stops the
work (counted by the sentences the model decoded, from /metrics)."""

from __future__ import annotations

import json
import re
import time

import httpx

from serving.stream import groups
from tests.conftest import run_benchmark
from tests.serving.conftest import metric

MODEL = "tiny-transformer"
DECODED = 'nmt_batch_sentences_sum{model="tiny-transformer"}'


def sentences(count: int, tag: str) -> list[str]:
    """Distinct sentences (nothing comes from the cache)."""
    return [f"A man with {i}{tag} red balloons walks down the street." for i in range(count)]


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def body(text, **options) -> dict:
    return {"source": "en", "target": "de", "text": text, "model": MODEL, **options}


def test_groups_start_with_one_sentence_then_share_the_rest_evenly():
    assert list(groups(20)) == [(0, 1), (1, 11), (11, 20)]  # the slots finish together
    assert list(groups(50)) == [(0, 1), (1, 10), (10, 18), (18, 26), (26, 34), (34, 42), (42, 50)]
    assert list(groups(3)) == [(0, 1), (1, 2), (2, 3)]
    assert list(groups(1)) == [(0, 1)]
    assert list(groups(0)) == []


def test_a_stream_has_one_event_per_sentence_in_order_then_done(serve):
    server = serve()
    text = " ".join(sentences(12, "s"))
    with server.client() as client:
        with client.stream(
            "POST", "/v1/translate/stream", json=body(text, n_best=2, beam_size=2)
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["X-Model-Variant"] == MODEL
            events = read_events(response)
        whole = client.post("/v1/translate", json=body(text, n_best=2, beam_size=2)).json()["translations"][0]
    names = [name for name, _ in events]
    assert names == ["sentence"] * 12 + ["done"]
    assert [data["index"] for _, data in events[:-1]] == list(range(12))
    assert [data["source"] for _, data in events[:-1]] == sentences(12, "s")
    for _, data in events[:-1]:
        assert 0.0 <= data["confidence"] <= 1.0 and data["origin"] == "model"
        assert len(data["alternatives"]) == 2
    done = events[-1][1]
    assert done["sentences"] == 12 and done["model"] == MODEL and done["id"]
    assert done["text"] == " ".join(data["text"] for _, data in events[:-1])
    assert whole["text"] == done["text"] and whole["cached"] is True  # the stream filled the cache
    assert done["confidence"] == min(data["confidence"] for _, data in events[:-1])


def test_errors_before_the_stream_are_json(serve):
    server = serve(max_chars="600")
    with server.client() as client:
        cases = [
            (body(["one", "two"]), 422, "text"),
            (body(""), 422, "text"),
            (body("a" * 601), 422, "text"),
            (body("A dog.", model="nope"), 400, "model"),
            (body("A dog.", beam_size=0), 422, "beam_size"),
            ({**body("A dog."), "target": "fr", "model": None}, 400, "target"),
            (body("A dog. " + "word " * 500), 422, "text"),  # a sentence over the model's limit
        ]
        for request, status, field in cases:
            answer = client.post("/v1/translate/stream", json=request)
            assert answer.status_code == status, (request, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["field"] == field


def test_a_client_that_goes_away_stops_the_work(serve):
    server = serve(max_chars="60000", max_body_bytes="200000", decode_slots="1")
    text = " ".join(sentences(300, "gone"))
    with server.client() as client:
        before = metric(client.get("/metrics").text, DECODED)
        with client.stream("POST", "/v1/translate/stream", json=body(text)) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break  # the first sentence is here: hang up
        time.sleep(2.0)
        after = metric(client.get("/metrics").text, DECODED)
        time.sleep(1.0)
        later = metric(client.get("/metrics").text, DECODED)
    print(f"sentences decoded after a disconnect at the first event: {after - before:.0f} of 300")
    assert later == after, "the work went on after the client left"
    assert after - before < 100


def test_the_stream_benchmark_prints_the_first_event_ratio(models_dir, multi30k):
    """benchmarks/stream.py end to end on the tiny Transformer (its ratio on a tiny model says
    little; the shipped bundle's is in docs/service.md)."""
    stdout = run_benchmark(
        "stream.py", "--model", str(models_dir / MODEL), "--data", str(multi30k), "--rounds", "1", timeout=300
    )
    assert re.search(
        r"first event / whole stream: \d+\.\d%; first event / POST /v1/translate: \d+\.\d%", stdout
    )


def test_an_error_once_the_stream_has_begun_is_an_error_event_and_the_end(serve):
    """A deadline no decode can meet: the stream has started (200), its first group times out."""
    server = serve(request_timeout_s="0.0001")
    with (
        server.client() as client,
        client.stream("POST", "/v1/translate/stream", json=body(" ".join(sentences(3, "late")))) as response,
    ):
        assert response.status_code == 200
        events = read_events(response)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["error"]["type"] == "timeout"
