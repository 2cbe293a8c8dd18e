"""API keys, per-key rate limits and throttled failed authentication, shared by every replica.

`NMT_MEMORY_KEYS` are keys that may also write the translation memory (PUT/DELETE /v1/memory);
they count as API keys, and once any key is set no other key may write it.

With `NMT_API_KEYS` set, translation, feedback and the A/B report need a key: `Authorization:
Bearer KEY`, or `api_key` in the query string (or in the body, on LibreTranslate's endpoint, as
its clients send it). `/metrics` takes a key or `NMT_METRICS_TOKEN`. Keys are compared in
constant time.

Limits are token buckets refilled evenly over a minute:
- per key, `NMT_RATE_LIMIT_PER_MINUTE` requests (429 + Retry-After once empty);
- per client address, `NMT_AUTH_FAILURES_PER_MINUTE` failed authentications; once they are used
  up, every request from that address is refused (429), a right key included, so keys cannot be
  guessed at speed.

The buckets live in Redis when the service has one (one Lua script per request: the checks and
updates are one atomic round trip, and N replicas give a key its limit once, not N times). When
Redis is unreachable they fall back to this process's own buckets (logged and counted), so an
outage loosens the limits to per-process ones, never blocks traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from serving.errors import ApiError
from serving.redis_link import RedisLink

log = logging.getLogger("nmt.serving.access")

LOCAL_BUCKETS = 100_000  # in-process buckets kept (least recently used dropped first)


class Verdict(IntEnum):
    ALLOWED = 0
    THROTTLED = 1  # too many failed authentications from this address
    INVALID = 2  # a wrong or missing key (counted as a failure)
    RATE_LIMITED = 3


# KEYS: the address's failure bucket, the key's rate bucket; ARGV: failure capacity, whether the
# key is valid (1/0), rate capacity (0: no limit). Returns {verdict, seconds to wait}.
_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local function level(key, capacity)
  local saved = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(saved[1]), tonumber(saved[2])
  if not tokens then return capacity end
  return math.min(capacity, tokens + (now - at) * capacity / 60)
end
local function save(key, tokens)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, 61)
end
local failures = tonumber(ARGV[1])
local left = level(KEYS[1], failures)
if left < 1 then return {1, tostring((1 - left) * 60 / failures)} end
if ARGV[2] == '0' then save(KEYS[1], left - 1) return {2, '0'} end
local rate = tonumber(ARGV[3])
if rate > 0 then
  local tokens = level(KEYS[2], rate)
  if tokens < 1 then return {3, tostring((1 - tokens) * 60 / rate)} end
  save(KEYS[2], tokens - 1)
end
return {0, '0'}
"""


class TokenBucket:
    """The in-process bucket: `capacity` tokens, refilled evenly over a minute."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def level(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens

    def wait_s(self) -> float:
        """Seconds until a token is there (0 if one is)."""
        return max(0.0, (1 - self.level()) / self.rate)


class LocalBuckets:
    """Buckets by name in this process, the least recently used dropped beyond `LOCAL_BUCKETS`."""

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def get(self, name: str, per_minute: int) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(per_minute)
            if len(self._buckets) > LOCAL_BUCKETS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(name)
        return bucket

    def decide(
        self, failure: str, rate: str, failures: int, valid: bool, per_minute: int
    ) -> tuple[int, float]:
        """What `_SCRIPT` decides, in this process."""
        guard = self.get(failure, failures)
        if guard.level() < 1:
            return Verdict.THROTTLED, guard.wait_s()
        if not valid:
            guard.tokens -= 1
            return Verdict.INVALID, 0.0
        if per_minute:
            bucket = self.get(rate, per_minute)
            if bucket.level() < 1:
                return Verdict.RATE_LIMITED, bucket.wait_s()
            bucket.tokens -= 1
        return Verdict.ALLOWED, 0.0


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a key (Redis keys and logs never hold keys)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class AccessControl:
    def __init__(
        self,
        api_keys: list[str],
        per_minute: int,
        failures_per_minute: int,
        metrics_token: str | None = None,
        link: RedisLink | None = None,
        on_fallback: Callable[[], None] | None = None,
        memory_keys: list[str] | None = None,
    ) -> None:
        self.api_keys = [key.encode() for key in [*api_keys, *(memory_keys or [])]]
        # keys that may write the translation memory, by fingerprint (as `check` names the caller)
        self.memory_writers = {fingerprint(key) for key in memory_keys or []}
        self.metrics_token = metrics_token.encode() if metrics_token else None
        self.per_minute = per_minute
        self.failures_per_minute = failures_per_minute
        self.link = link
        self.on_fallback = on_fallback or (lambda: None)
        self.local = LocalBuckets()
        self._script: Any = link.client.register_script(_SCRIPT) if link else None

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys)

    def may_write_memory(self, key: str | None) -> bool:
        """Whether the caller (its key's fingerprint, as `check` returns it) may write the
        translation memory: any caller of an open service, else holders of a memory key."""
        return not self.enabled or key in self.memory_writers

    def _known(self, given: bytes, tokens: list[bytes]) -> bytes | None:
        return next((token for token in tokens if hmac.compare_digest(token, given)), None)

    async def check(self, key: str | None, client: str, metrics: bool = False) -> str | None:
        """Raise 401 or 429 unless this request may go on; the key's fingerprint if it gave one.
        `metrics`: the request is for /metrics, which the metrics token opens too."""
        tokens = [*self.api_keys, self.metrics_token] if metrics and self.metrics_token else self.api_keys
        if not tokens:
            return None
        known = self._known(key.encode("utf-8", "surrogatepass"), tokens) if key else None
        limited = self.per_minute if known in self.api_keys else 0
        verdict, wait = await self._decide(
            failure=f"nmt:auth:fail:{fingerprint(client)}",
            rate=f"nmt:rate:{fingerprint(known.decode()) if known else ''}",
            valid=known is not None,
            per_minute=limited,
        )
        retry = {"Retry-After": str(max(1, math.ceil(wait)))}
        challenge = {"WWW-Authenticate": "Bearer"}
        if verdict == Verdict.THROTTLED:
            raise ApiError(429, "Authorization", "too many failed authentications; wait", "throttled", retry)
        if verdict == Verdict.INVALID:
            message = "invalid API key" if key else "an API key is required (Authorization: Bearer KEY)"
            raise ApiError(401, "Authorization", message, "unauthorized", challenge)
        if verdict == Verdict.RATE_LIMITED:
            message = f"rate limit of {self.per_minute} requests a minute exceeded"
            raise ApiError(429, None, message, "rate_limited", retry)
        return fingerprint(key) if key else None

    async def _decide(self, failure: str, rate: str, valid: bool, per_minute: int) -> tuple[int, float]:
        if self.link is not None:
            missing = (-1, "0")

            async def work(client: Any) -> Any:
                args = [self.failures_per_minute, int(valid), per_minute]
                return await self._script(keys=[failure, rate], args=args, client=client)

            verdict, wait = await self.link.call("limits", work, missing)
            if verdict != -1:
                return int(verdict), float(wait)
            self.on_fallback()
        return self.local.decide(failure, rate, self.failures_per_minute, valid, per_minute)
