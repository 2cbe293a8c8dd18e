"""The service with Redis: a shared cache and A/B store, and Redis dying under load."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.serving.conftest import metric


def test_redis_backed_cache_and_feedback(serve, redis_server):
    server = serve(redis_url=redis_server.url)
    body = {"text": ["A child plays in the sand."], "source": "en", "target": "de"}
    with server.client() as client:
        assert client.get("/ready").json()["redis"] == "up"
        first = client.post("/v1/translate", json=body).json()["translations"][0]
        second = client.post("/v1/translate", json=body).json()["translations"][0]
        assert (first["cached"], second["cached"]) == (False, True) and first["text"] == second["text"]
        time.sleep(0.2)  # the A/B record is written in the background
        reply = client.post("/v1/feedback", json={"id": first["id"], "reference": "Ein Kind spielt im Sand."})
        assert reply.status_code == 200, reply.text
        report = client.get("/v1/ab/report").json()
    assert report["pairs"]["en-de"]["tiny-transformer"]["references"] == 1
    # a second server on the same Redis sees the first one's cache
    other = serve(redis_url=redis_server.url)
    with other.client() as client:
        assert client.post("/v1/translate", json=body).json()["translations"][0]["cached"] is True


def test_killing_redis_during_requests_fails_none_of_them(serve, redis_server):
    server = serve(redis_url=redis_server.url, redis_timeout_s="0.2", redis_retry_s="0.5")
    texts = [f"A man with {i} red balloons walks down the street." for i in range(40)]

    def ask(client, text):
        return client.post("/v1/translate", json={"text": text, "source": "en", "target": "de"})

    with server.client() as client, ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, client, text) for text in texts]
        time.sleep(0.3)
        redis_server.stop()  # mid-flight
        replies = [future.result() for future in futures]
        assert [r.status_code for r in replies] == [200] * len(texts)
        during = [ask(client, text) for text in texts[:5]]
        assert all(r.status_code == 200 and not r.json()["translations"][0]["cached"] for r in during)
        assert client.get("/ready").status_code == 200  # degraded, still ready
        assert metric(client.get("/metrics").text, "nmt_redis_errors_total") >= 1
        feedback = client.post("/v1/feedback", json={"id": "a" * 32, "reference": "x"})
        assert feedback.status_code == 503 and feedback.headers["Retry-After"]

        redis_server.start()
        time.sleep(0.7)  # past the retry interval: Redis is tried again, and comes back in use
        deadline = time.monotonic() + 10
        while not ask(client, texts[0]).json()["translations"][0]["cached"]:
            assert time.monotonic() < deadline, "the service did not go back to Redis"
            time.sleep(0.2)


def test_workers_share_the_redis_cache_and_add_up_their_metrics(serve, redis_server):
    server = serve(workers=2, redis_url=redis_server.url)
    body = {"text": "A woman walks her dog in the park.", "source": "en", "target": "de"}
    # a new connection per request, so that both workers get some
    replies = [httpx.post(server.url + "/v1/translate", json=body, timeout=60) for _ in range(12)]
    assert all(r.status_code == 200 for r in replies)
    assert [r.json()["translations"][0]["cached"] for r in replies][1:] == [True] * 11
    metrics = httpx.get(server.url + "/metrics").text
    assert metric(metrics, 'nmt_requests_total{endpoint="/v1/translate",status="200"}') == 12
