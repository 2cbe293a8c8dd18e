"""API keys and per-key rate limits.

With `NMT_API_KEYS` set, translation and feedback need `Authorization: Bearer KEY` (the
LibreTranslate endpoint also takes its `api_key` field); a missing or unknown key is a 401.
With `NMT_RATE_LIMIT_PER_MINUTE` set too, each key gets a token bucket of that many requests
refilled evenly over a minute; an empty bucket is a 429 with Retry-After. Keys are compared in
constant time. The buckets live in this process: with N workers a key gets up to N times the rate.
"""

from __future__ import annotations

import hmac
import math
import time

from serving.errors import ApiError


class TokenBucket:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class AccessControl:
    def __init__(self, api_keys: list[str], per_minute: int) -> None:
        self.api_keys = [key.encode() for key in api_keys]
        self.per_minute = per_minute
        self._buckets: dict[bytes, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys)

    def check(self, authorization: str | None, body_key: str | None = None) -> None:
        """Raise 401 or 429 unless this request may go on."""
        if not self.api_keys:
            return
        key = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        key = key or body_key
        challenge = {"WWW-Authenticate": "Bearer"}
        if not key:
            raise ApiError(
                401,
                "Authorization",
                "an API key is required (Authorization: Bearer KEY)",
                "unauthorized",
                challenge,
            )
        given = key.encode()
        known = next((k for k in self.api_keys if hmac.compare_digest(k, given)), None)
        if known is None:
            raise ApiError(401, "Authorization", "invalid API key", "unauthorized", challenge)
        if self.per_minute:
            wait = self._buckets.setdefault(known, TokenBucket(self.per_minute)).take()
            if wait > 0:
                raise ApiError(
                    429,
                    None,
                    f"rate limit of {self.per_minute} requests a minute exceeded",
                    "rate_limited",
                    {"Retry-After": str(math.ceil(wait))},
                )
