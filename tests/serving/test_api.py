"""The native API over real HTTP against `nmt serve`: translation, caching, errors, A/B routing,
feedback and report, metrics."""

from __future__ import annotations

import collections
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from nmt.bundle import load_bundle
from nmt.confidence import translate_checked
from nmt.translator import Translator
from tests.serving.conftest import metric, start_server, stop_server

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "A woman sings on a stage."]


def post(client, headers=None, **body):
    return client.post("/v1/translate", json={"source": "en", "target": "de", **body}, headers=headers)


def test_single_and_list_translation_match_the_library(ab_server, models_dir):
    with ab_server.client() as client:
        for name in ("tiny-transformer", "tiny-lstm_attention"):
            one = post(client, text=SENTENCES[0], model=name)
            assert one.status_code == 200, one.text
            assert one.headers["X-Model-Variant"] == name
            [item] = one.json()["translations"]
            assert item["model"] == name and item["variant"] == name and isinstance(item["score"], float)
            many = post(client, text=SENTENCES, model=name).json()["translations"]
            assert len(many) == 3 and many[0]["text"] == item["text"]
            translator = Translator.from_bundle(load_bundle(models_dir / name), backend="onnx")
            # as the library translates, degenerate output decoded again with repetition blocking
            expected = translate_checked(translator, SENTENCES, translator.search)
            assert [t["text"] for t in many] == [t.text for t in expected]
            assert item["version"] == load_bundle(models_dir / name).version


def test_partial_cache_hits_decode_only_the_rest(ab_server):
    texts = ["A cat sleeps on a red sofa.", "A boy kicks a ball."]
    with ab_server.client() as client:
        first = post(client, text=texts, model="tiny-transformer").json()["translations"]
        assert [t["cached"] for t in first] == [False, False]
        second = post(
            client, text=[texts[1], "An old man reads a newspaper."], model="tiny-transformer"
        ).json()
        assert [t["cached"] for t in second["translations"]] == [True, False]
        assert second["translations"][0]["text"] == first[1]["text"]
        # other decoding options are another cache entry
        beam1 = post(client, text=texts[0], model="tiny-transformer", beam_size=1).json()["translations"][0]
        assert beam1["cached"] is False
        metrics = client.get("/metrics").text
    # a request that names its model is counted apart from the A/B split's variants
    assert 'nmt_cache_hits_total{model="tiny-transformer",variant="pinned"}' in metrics


def test_a_text_of_several_sentences_is_split_and_joined(ab_server):
    with ab_server.client() as client:
        whole = post(client, text=f"{SENTENCES[0]} {SENTENCES[1]}", model="tiny-transformer").json()
        parts = post(client, text=SENTENCES[:2], model="tiny-transformer").json()
    assert whole["translations"][0]["text"] == " ".join(t["text"] for t in parts["translations"])
    assert parts["translations"][0]["cached"] and parts["translations"][1]["cached"]


def test_return_alignment_gives_the_library_alignments_joined_over_sentences(ab_server, models_dir):
    sentences = ["A girl in a red coat rides a bike.", "Three men sit on a bench."]  # in no other test
    text = " ".join(sentences)
    with ab_server.client() as client:
        for name in ("tiny-transformer", "tiny-lstm_attention"):
            plain = post(client, text=text, model=name).json()["translations"][0]
            assert "alignment" not in plain
            # the cached answer without alignments does not serve a request for them
            first = post(client, text=text, model=name, return_alignment=True).json()["translations"][0]
            again = post(client, text=text, model=name, return_alignment=True).json()["translations"][0]
            assert (plain["cached"], first["cached"], again["cached"]) == (False, False, True)
            assert first["text"] == again["text"] == plain["text"]
            assert first["alignment"] == again["alignment"]
            translator = Translator.from_bundle(load_bundle(models_dir / name), backend="onnx")
            one, two = translate_checked(translator, sentences, translator.search, alignments=True)
            shift = (len(sentences[0].split()), len(one.text.split()))
            expected = [*one.alignment, *((src + shift[0], tgt + shift[1]) for src, tgt in two.alignment)]
            assert first["alignment"] == [list(link) for link in expected]
            assert [tgt for _, tgt in first["alignment"]] == list(range(len(first["text"].split())))
            described = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
            assert described[name]["alignment"] is True


def test_return_alignment_for_a_model_without_attention_is_a_422(trained_bundles, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained_bundles["lstm"], models / "tiny-lstm")
    server = start_server(models, tmp_path, backend="torch")
    try:
        with server.client() as client:
            answer = post(client, text=SENTENCES[0], return_alignment=True)
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert error["field"] == "return_alignment" and "without attention" in error["message"]
            assert post(client, text=SENTENCES[0], return_alignment="yes").status_code == 422
            assert post(client, text=SENTENCES[0], return_alignment=False).status_code == 200
            assert client.get("/v1/models").json()["models"][0]["alignment"] is False
    finally:
        stop_server(server)


def test_n_best_gives_alternatives(ab_server):
    with ab_server.client() as client:
        item = post(client, text=SENTENCES[2], model="tiny-transformer", beam_size=3, n_best=3).json()
    alternatives = item["translations"][0]["alternatives"]
    assert len(alternatives) == 3 and alternatives[0]["text"] == item["translations"][0]["text"]
    assert [a["score"] for a in alternatives] == sorted((a["score"] for a in alternatives), reverse=True)


def test_concurrent_requests_are_batched(ab_server):
    unique = [f"A dog number {i} runs across the green field." for i in range(24)]
    with ab_server.client() as client, ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda text: post(client, text=text, model="tiny-lstm_attention"), unique))
        assert all(reply.status_code == 200 for reply in replies)
        metrics = client.get("/metrics").text
    count = metric(metrics, 'nmt_batch_sentences_count{model="tiny-lstm_attention"}')
    total = metric(metrics, 'nmt_batch_sentences_sum{model="tiny-lstm_attention"}')
    assert total >= 24 and count < total  # fewer decodes than sentences: requests shared batches


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"source": "en", "target": "de"}, 422, "text"),
        ({"text": "", "source": "en", "target": "de"}, 422, "text"),
        ({"text": [], "source": "en", "target": "de"}, 422, "text"),
        ({"text": ["ok", "  "], "source": "en", "target": "de"}, 422, "text.1"),
        ({"text": ["ok", 3], "source": "en", "target": "de"}, 422, "text.1"),
        ({"text": 3, "source": "en", "target": "de"}, 422, "text"),
        ({"text": ["a"] * 65, "source": "en", "target": "de"}, 422, "text"),
        ({"text": "x" * 5001, "source": "en", "target": "de"}, 422, "text"),
        ({"text": "hi", "source": "xx", "target": "de"}, 400, "source"),
        ({"text": "hi", "source": "en", "target": "xx"}, 400, "target"),
        ({"text": "hi", "source": "en", "target": "de", "model": "nope"}, 400, "model"),
        ({"text": "hi", "source": "en", "target": "de", "beam_size": 0}, 422, "beam_size"),
        ({"text": "hi", "source": "en", "target": "de", "beam_size": 17}, 422, "beam_size"),
        ({"text": "hi", "source": "en", "target": "de", "beam_size": 2, "n_best": 3}, 422, "n_best"),
        ({"text": "hi", "source": "en", "target": "de", "max_length": 0}, 422, "max_length"),
        ({"text": "hi", "source": "en", "target": "de", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_requests_name_the_field(ab_server, body, status, field):
    with ab_server.client() as client:
        reply = client.post("/v1/translate", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["field"] == field


def test_malformed_wrong_type_and_oversized_bodies(ab_server):
    with ab_server.client() as client:
        malformed = client.post(
            "/v1/translate", content=b'{"text": "hi",', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400 and malformed.json()["error"]["field"] == "body"
        wrong_type = client.post("/v1/translate", content=b"text=hi", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 415 and wrong_type.json()["error"]["field"] == "Content-Type"
        huge = client.post("/v1/translate", json={"text": "x" * 1_100_000, "source": "en", "target": "de"})
        assert huge.status_code == 413 and huge.json()["error"]["field"] == "body"
        chunked = client.post(
            "/v1/translate",
            content=iter([b'{"text": "', b"x" * 1_100_000, b'", "source": "en", "target": "de"}']),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        assert client.get("/v1/nothing").status_code == 404
        assert client.get("/v1/translate").status_code == 405


def test_ab_split_is_weighted_sticky_and_overridable(ab_server):
    with ab_server.client() as client:
        seen = collections.Counter()
        for i in range(120):
            reply = client.post(
                "/v1/translate",
                json={"text": "A girl is jumping.", "source": "en", "target": "de"},
                headers={"X-Client-Id": f"client-{i}"},
            )
            assert reply.status_code == 200
            seen[reply.headers["X-Model-Variant"]] += 1
        assert set(seen) == {"tiny-transformer", "tiny-lstm_attention"}
        assert 35 <= seen["tiny-transformer"] <= 85, seen  # 50/50 within a wide binomial margin
        sticky = {
            client.post(
                "/v1/translate",
                json={"text": f"A girl is jumping {i} times.", "source": "en", "target": "de"},
                headers={"X-Client-Id": "client-7"},
            ).json()["translations"][0]["variant"]
            for i in range(8)
        }
        assert len(sticky) == 1
        forced = client.post(
            "/v1/translate",
            json={"text": "A girl is jumping.", "source": "en", "target": "de", "model": "tiny-transformer"},
            headers={"X-Client-Id": "client-7"},
        )
        assert forced.headers["X-Model-Variant"] == "tiny-transformer"
        models = client.get("/v1/models").json()
    assert models["ab_split"]["en-de"] == {"tiny-lstm_attention": 50.0, "tiny-transformer": 50.0}
    assert models["defaults"] == {"en-de": "tiny-transformer"}


def test_feedback_and_report(ab_server, tiny_corpus):
    """References reach the variant that served the translation; only its client may post them;
    requests that pinned their model are reported apart from the split."""
    src = (tiny_corpus / "test_2016_flickr.en").read_text().splitlines()[:12]
    refs = (tiny_corpus / "test_2016_flickr.de").read_text().splitlines()[:12]
    served = collections.Counter()
    with ab_server.client() as client:
        for i, (text, ref) in enumerate(zip(src, refs, strict=True)):
            for c in range(2):  # each client id draws its variant from the 50/50 split
                who = {"X-Client-Id": f"reporter-{i}-{c}"}
                item = post(client, text=text, headers=who).json()["translations"][0]
                reply = client.post("/v1/feedback", json={"id": item["id"], "reference": ref}, headers=who)
                assert reply.status_code == 200 and reply.json()["variant"] == item["variant"]
                served[item["variant"]] += 1
        stolen = client.post(
            "/v1/feedback", json={"id": item["id"], "reference": "Hallo"}, headers={"X-Client-Id": "other"}
        )
        assert stolen.status_code == 403 and stolen.json()["error"]["field"] == "id"
        pinned = post(client, text=src[0], model="tiny-transformer").json()["translations"][0]
        assert client.post("/v1/feedback", json={"id": pinned["id"], "reference": refs[0]}).status_code == 200
        unknown = client.post("/v1/feedback", json={"id": "f" * 32, "reference": "Hallo"})
        assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "id"
        empty = client.post("/v1/feedback", json={"id": "f" * 32, "reference": ""})
        assert empty.status_code == 422 and empty.json()["error"]["field"] == "reference"
        huge = client.post("/v1/feedback", json={"id": pinned["id"], "reference": "x" * 5001})
        assert huge.status_code == 422 and huge.json()["error"]["field"] == "reference"
        report = client.get("/v1/ab/report").json()
    assert set(served) == {"tiny-transformer", "tiny-lstm_attention"}
    for name, count in served.items():
        variant = report["pairs"]["en-de"][name]
        assert variant["references"] == count and variant["requests"] >= count
        assert 0 <= variant["bleu"]["score"] <= 100 and variant["bleu"]["ci95"] >= 0
        assert variant["bleu"]["signature"].startswith("nrefs:1|")
        assert variant["latency_ms"]["p50"] > 0
    assert report["pinned"]["en-de"]["tiny-transformer"]["references"] == 1


def test_health_ready_models_metrics_docs(ab_server):
    with ab_server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        assert ready["status"] == "ready" and ready["cache"] == "memory"
        models = client.get("/v1/models").json()["models"]
        assert {m["architecture"] for m in models} == {"transformer", "lstm_attention"}
        assert all(m["backend"] == "onnx" for m in models)
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'nmt_requests_total{endpoint="/v1/translate",status="200"}' in metrics.text
        assert "nmt_request_seconds_bucket" in metrics.text
        assert client.get("/docs").status_code == 200
        assert "/v1/translate" in client.get("/openapi.json").json()["paths"]
