"""uvicorn's HTTP protocol (httptools), with the two timeouts it lacks.

uvicorn closes idle keep-alive connections, but a connection that never sends a complete request
head, or a request whose body trickles in, is held for ever: 1,000 half-open connections kept
1,000 file descriptors, and a half-sent body was held for minutes. Here a request head must arrive
within `NMT_HEADER_TIMEOUT_S` of the connection opening (or of the previous response), and its body
within `NMT_BODY_TIMEOUT_S` of the head; else the client gets a 408 and the connection is closed.

`nmt serve` selects it with uvicorn's `http="serving.protocol:GuardedHttpToolsProtocol"`.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.settings import Settings


@cache
def _timeouts() -> tuple[float, float]:
    """(header, body) seconds, from this process's NMT_* settings."""
    settings = Settings()
    return settings.header_timeout_s, settings.body_timeout_s


def _timeout_response(what: str, seconds: float) -> bytes:
    message = f"the request {what} did not arrive within {seconds:g} s"
    body = json.dumps({"error": {"type": "timeout", "field": None, "message": message}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One lazy timer per connection: moving a deadline only sets two fields, and the timer,
    when it fires, re-arms itself for the current deadline or expires the phase it guards
    (four timer handles per request were a visible share of a cache hit's time)."""

    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None  # "head" or "body": what is awaited; None: nothing is
    _deadline = 0.0
    _limit = 0.0

    def _arm(self, phase: str, seconds: float) -> None:
        self._phase, self._limit = phase, seconds
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._phase is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        self.transport.write(_timeout_response(self._phase, self._limit))
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm("head", _timeouts()[0])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm("head", _timeouts()[0])

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", _timeouts()[1])

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm("head", _timeouts()[0])  # the next request's head (keep-alive closes sooner)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)
