"""The service's settings: `NMT_*` environment variables, validated once at start-up.

Every setting has a safe default, so `nmt serve` with no environment serves the bundles under
`models/` on the CPU with an in-process cache. Lists and maps may be given as JSON
(`NMT_API_KEYS='["k1","k2"]'`, `NMT_AB_SPLIT='{"en-de": {"transformer-en-de": 50, ...}}'`);
API keys also as a comma-separated list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NMT_", extra="ignore", frozen=True)

    # models and how they run
    models_dir: Path = Path("models")
    backend: Literal["auto", "onnx", "torch", "ctranslate2"] = Field(
        "auto",
        description="engine of every bundle; auto = the fastest in the bundle's speed record for this "
        "device (nmt bench --record), else ONNX Runtime (see nmt/engines.py)",
    )
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(0, ge=0, description="intra-op threads per decode; 0 = cores / decode slots")
    shortlist: bool = Field(
        True,
        description="decode over the bundle's vocabulary shortlist (shortlist.npz) where it has one; "
        "NMT_SHORTLIST=0 decodes over the full vocabulary",
    )

    # micro-batching: gather concurrent sentences for one model into one decode
    batch_max_sentences: int = Field(32, ge=1, le=1024)
    batch_max_tokens: int = Field(4096, ge=16)
    batch_max_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)
    decode_slots: int = Field(
        0, ge=0, le=64, description="batches decoded at once per model; 0 = 2 on a CPU of 2+ cores, else 1"
    )

    # request limits
    max_texts: int = Field(64, ge=1, description="items in one request's text list")
    max_chars: int = Field(5000, ge=1, description="characters in one text")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_beam_size: int = Field(16, ge=1, le=64)
    max_length: int = Field(512, ge=1, description="upper bound of a request's max_length")
    max_sentence_tokens: int = Field(
        1000, ge=1, description="source tokens in one sentence (lower where the model's own limit is)"
    )
    max_glossary_terms: int = Field(
        1000,
        ge=1,
        description="entries of one glossary (a request's or a stored one), and do_not_translate spans",
    )
    max_term_chars: int = Field(
        200, ge=1, description="characters of one glossary term or do_not_translate span"
    )
    max_file_bytes: int = Field(
        500_000, ge=1024, description="bytes of a file sent to /translate_file (its text counts as max_chars)"
    )
    file_ttl_s: int = Field(3600, ge=1, description="a translated file can be downloaded this long")

    # backpressure: what one request may cost, and how much may wait
    request_timeout_s: float = Field(
        60.0, gt=0.0, description="a request not done by then (all its decodes) is abandoned and answered 504"
    )
    queue_max_sentences: int = Field(
        4096, ge=1, description="sentences waiting per model; beyond it requests get 503 + Retry-After"
    )

    # connections (uvicorn): limits and timeouts a slow or hostile client cannot outlast
    max_connections: int = Field(1000, ge=1, description="open connections + requests; beyond it 503")
    header_timeout_s: float = Field(10.0, gt=0.0, description="to receive a request's headers")
    body_timeout_s: float = Field(30.0, gt=0.0, description="to receive a request's body")
    keep_alive_s: float = Field(5.0, gt=0.0, description="an idle keep-alive connection is closed after")
    shutdown_timeout_s: float = Field(30.0, ge=0.0, description="drain in-flight work this long on SIGTERM")

    # cache: Redis when a URL is given, else an in-process LRU
    redis_url: str | None = None
    redis_timeout_s: float = Field(0.25, gt=0.0, description="per Redis call; then serve uncached")
    redis_retry_s: float = Field(2.0, ge=0.0, description="after a Redis error, skip Redis this long")
    redis_max_connections: int = Field(64, ge=1, description="Redis connections per process (pooled)")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    cache_max_entries: int = Field(100_000, ge=1, description="in-process LRU size")

    # A/B testing: per language pair "src-tgt", model name -> weight
    ab_split: dict[str, dict[str, float]] = Field(default_factory=dict)
    client_id_header: str = "X-Client-Id"
    feedback_ttl_s: int = Field(
        30 * 24 * 3600, ge=1, description="retention of A/B data: served translations and their references"
    )
    max_reference_chars: int = Field(5000, ge=1, description="characters in one posted reference")

    # access: API keys (Authorization: Bearer KEY, or api_key in JSON, form or query string);
    # none configured = open service
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit_per_minute: int = Field(0, ge=0, description="requests per key and minute; 0 = no limit")
    auth_failures_per_minute: int = Field(
        10, ge=1, description="failed authentications per client address and minute, then 429"
    )
    metrics_token: str | None = Field(
        None, description="a bearer token for /metrics alone (with API keys set, any key works too)"
    )
    memory_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys that may also write the translation memory (PUT/DELETE /v1/memory); with "
        "keys set, no other key may. Without any key configured the memory is open to writes",
    )
    memory_max_entries: int = Field(100_000, ge=1, description="translation memory entries kept in-process")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="origins browsers may call from; '*' = any"
    )

    @property
    def slots(self) -> int:
        """Decode slots: measured on 2 cores (benchmarks/serve_load.py), two one-thread decodes
        side by side serve 1.26x the uncached requests of one two-thread decode."""
        if self.decode_slots:
            return self.decode_slots
        return 2 if self.device == "cpu" and _cores() >= 2 else 1

    @property
    def decode_threads(self) -> int:
        """Intra-op threads of each decode."""
        return self.threads or max(1, _cores() // self.slots)

    @field_validator("api_keys", "cors_origins", "memory_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [key.strip() for key in text.split(",") if key.strip()]
        return value

    @field_validator("ab_split")
    @classmethod
    def _positive_weights(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for pair, weights in value.items():
            if "-" not in pair:
                raise ValueError(f"language pair {pair!r} must look like 'en-de'")
            if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"{pair}: weights must be non-negative with a positive sum")
        return value
