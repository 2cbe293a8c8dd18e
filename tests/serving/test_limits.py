"""Bounded cost per request over real HTTP: a full queue answers 503 with Retry-After, a deadline
504, an over-long sentence 422 naming its text; work whose client left is not decoded; a
one-sentence request is not stuck behind a big job."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx

from tests.serving.conftest import big_job, metric

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "A woman sings on a stage."]


def decoded(client: httpx.Client) -> float:
    return metric(client.get("/metrics").text, 'nmt_batch_sentences_sum{model="tiny-transformer"}')


def test_a_full_queue_answers_503_with_retry_after(serve):
    server = serve(queue_max_sentences="100", max_chars="20000")
    with ThreadPoolExecutor(2) as pool, server.client() as client:
        running = pool.submit(client.post, "/v1/translate", json=big_job(sentences=60))
        time.sleep(0.5)  # queued and decoding
        refused = client.post("/v1/translate", json=big_job(texts=2, sentences=10, tag="b"))
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["Connection"] == "close"
        assert refused.json()["error"]["type"] == "overloaded"
        assert running.result().status_code == 200


def test_a_request_past_its_deadline_answers_504_and_its_work_is_dropped(serve):
    # a quarter second: this 2-core box decodes about 1,700 of the job's 2,560 sentences in 1 s,
    # a faster one all of them (and then the repair pass of the degenerate ones ran on)
    server = serve(request_timeout_s="0.25")
    with server.client() as client:
        late = client.post("/v1/translate", json=big_job())
        assert late.status_code == 504 and late.json()["error"]["type"] == "timeout"
        assert late.headers["Connection"] == "close"
        time.sleep(1.0)  # a batch that was decoding when the deadline passed finishes
        before = decoded(client)
        time.sleep(1.5)
        assert decoded(client) == before, "the abandoned sentences are still being decoded"
        assert before < 64 * 40


def test_work_of_a_client_that_left_is_not_decoded(serve):
    server = serve()
    address = urlparse(server.url)
    body = httpx.Request("POST", server.url + "/v1/translate", json=big_job(tag="gone"))
    with socket.create_connection((address.hostname, address.port)) as sock:
        head = f"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body.content)}\r\n\r\n"
        sock.sendall(head.encode() + body.content)
        time.sleep(0.5)  # decoding has started
    with server.client() as client:
        time.sleep(1.0)
        before = decoded(client)
        time.sleep(1.5)
        assert decoded(client) == before, "the sentences of the client that left are still decoded"
        assert before < 64 * 40


def test_a_small_request_is_answered_while_a_big_job_runs(serve):
    server = serve(max_chars="20000")
    with ThreadPoolExecutor(2) as pool, server.client() as client:
        running = pool.submit(client.post, "/v1/translate", json=big_job(sentences=60, tag="job"))
        time.sleep(0.5)
        latencies = []
        for i in range(5):
            started = time.monotonic()
            reply = client.post(
                "/v1/translate",
                json={
                    "text": f"A dog jumps over {i} fences.",
                    "source": "en",
                    "target": "de",
                    "model": "tiny-transformer",
                },
            )
            latencies.append(time.monotonic() - started)
            assert reply.status_code == 200
        assert not running.done(), "the job ended before the small requests: the test proves nothing"
        assert max(latencies) < 2.0, latencies
        assert running.result().status_code == 200


def test_an_over_long_sentence_is_refused_naming_its_text(serve):
    server = serve(max_sentence_tokens="30")
    long_sentence = "a man " * 40  # no sentence end: one sentence of about 80 tokens
    with server.client() as client:
        reply = client.post(
            "/v1/translate", json={"text": ["A dog runs.", long_sentence], "source": "en", "target": "de"}
        )
        assert reply.status_code == 422 and reply.json()["error"]["field"] == "text.1"
        assert "at most 30" in reply.json()["error"]["message"]
        lt = client.post("/translate", json={"q": long_sentence, "source": "en", "target": "de"})
        assert lt.status_code == 400 and lt.json()["error"].startswith("q:")
