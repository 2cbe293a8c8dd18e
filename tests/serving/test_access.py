"""API keys (header, query string, LibreTranslate's body field), per-key rate limits, throttled
failed authentication, protected operations endpoints, CORS."""

from __future__ import annotations

BODY = {"text": "A dog runs.", "source": "en", "target": "de"}


def test_keys_and_rate_limits(serve):
    server = serve(api_keys="key-one, key-two, key-three", rate_limit_per_minute="4", metrics_token="scrape")
    with server.client() as client:
        missing = client.post("/v1/translate", json=BODY)
        assert missing.status_code == 401 and missing.json()["error"]["field"] == "Authorization"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/translate", json=BODY, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        one = {"Authorization": "Bearer key-one"}
        assert [client.post("/v1/translate", json=BODY, headers=one).status_code for _ in range(4)] == [
            200
        ] * 4
        limited = client.post("/v1/translate", json=BODY, headers=one)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # limits are per key; keys come in the query string too, and in LibreTranslate's body
        assert client.post("/v1/translate?api_key=key-two", json=BODY).status_code == 200
        lt = {"q": "A dog runs.", "source": "en", "target": "de"}
        assert client.post("/translate", json={**lt, "api_key": "key-two"}).status_code == 200
        assert client.post("/translate", data={**lt, "api_key": "key-two"}).status_code == 200
        assert client.post("/translate?api_key=key-two", json=lt).status_code == 200
        lt_bad = client.post("/translate", json={**lt, "api_key": "x"})
        assert lt_bad.status_code == 401 and isinstance(lt_bad.json()["error"], str)
        # liveness and readiness stay open; metrics and the A/B report take a key (or the metrics token)
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer key-three"}).status_code == 200
        assert client.get("/v1/ab/report").status_code == 401
        assert client.get("/v1/ab/report", headers={"Authorization": "Bearer scrape"}).status_code == 401
        assert client.get("/v1/ab/report?api_key=key-three").status_code == 200


def test_failed_authentication_is_throttled_per_address(serve):
    server = serve(api_keys="right", auth_failures_per_minute="5")
    good = {"Authorization": "Bearer right"}
    with server.client() as client:
        guesses = [
            client.post(
                "/v1/translate", json=BODY, headers={"Authorization": f"Bearer guess-{i}"}
            ).status_code
            for i in range(8)
        ]
        assert guesses[:5] == [401] * 5 and guesses[5:] == [429] * 3
        throttled = client.post("/v1/translate", json=BODY, headers=good)  # even the right key, for now
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert throttled.json()["error"]["type"] == "throttled"


def test_cors_preflight_and_headers(serve):
    server = serve(cors_origins="https://app.example")
    with server.client() as client:
        preflight = client.options(
            "/translate",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        reply = client.post("/v1/translate", json=BODY, headers={"Origin": "https://app.example"})
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        assert "X-Model-Variant" in reply.headers["access-control-expose-headers"]
        other = client.options(
            "/translate", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers
    default = serve()  # LibreTranslate's default: any origin
    with default.client() as client:
        reply = client.post(
            "/translate",
            json={"q": "A dog.", "source": "en", "target": "de"},
            headers={"Origin": "https://anywhere.example"},
        )
        assert reply.headers["access-control-allow-origin"] == "*"
