"""API keys and per-key rate limits, on both the native and the LibreTranslate endpoint."""

from __future__ import annotations


def test_keys_and_rate_limits(serve):
    server = serve(api_keys="key-one, key-two", rate_limit_per_minute="3")
    body = {"text": "A dog runs.", "source": "en", "target": "de"}
    with server.client() as client:
        missing = client.post("/v1/translate", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["field"] == "Authorization"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/translate", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        one = {"Authorization": "Bearer key-one"}
        assert [client.post("/v1/translate", json=body, headers=one).status_code for _ in range(3)] == [
            200
        ] * 3
        limited = client.post("/v1/translate", json=body, headers=one)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # limits are per key; LibreTranslate clients pass the key in the body
        lt = client.post(
            "/translate", json={"q": "A dog runs.", "source": "en", "target": "de", "api_key": "key-two"}
        )
        assert lt.status_code == 200, lt.text
        lt_bad = client.post(
            "/translate", json={"q": "A dog runs.", "source": "en", "target": "de", "api_key": "x"}
        )
        assert lt_bad.status_code == 401 and isinstance(lt_bad.json()["error"], str)
        # operations stay open
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
