"""Load on the translation service over loopback HTTP, beside a FastAPI hello-world yardstick.

    python benchmarks/serve_load.py [--model models/transformer-en-de] [--backend onnx]

Starts `nmt serve` on the bundle and a one-endpoint FastAPI app (same uvicorn, one worker each)
as subprocesses, then at concurrency 1, 8, 32 and 64 measures, one level after another:
- hello: GET /hello on the yardstick app;
- hit: POST /v1/translate of sentences already in the cache;
- miss: POST /v1/translate of unique test_2016_flickr sentences, one per request. Each level
  asks with its own `max_length` (far above any output), which changes the cache key and
  nothing else, so every request decodes.
It prints requests/s, p50/p95/p99 latency and errors per cell, and the offline throughput of the
same backend and beam (the translator `nmt translate` uses, batch 32) on the same sentences.
Each cell is bounded by --seconds and --requests. The client is a few lines of raw asyncio
HTTP/1.1 with keep-alive (one connection per concurrent client), so it costs the two cores
little. Targets (2 cores): miss at 32 >= 4x miss at 1 and >= 0.8x offline; hit >= 0.4x hello at
the same concurrency (judged at 32); hit p50 <= 3 ms (at 1); zero errors everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import print_table, verdict  # noqa: E402


def hello_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url_host: str, port: int, path: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    request = f"GET {path} HTTP/1.1\r\nHost: {url_host}\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"serve_load: server exited:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection((url_host, port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit("serve_load: server did not get ready")


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read one Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def load(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    """Send `requests` in order from `concurrency` clients until done or `seconds` pass."""
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    queue = iter(requests)
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection) -> None:
        nonlocal errors
        for raw in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                status, _ = await connection.request(raw)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append(time.perf_counter() - started)
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": 1000 * quantiles[49],
        "p95": 1000 * quantiles[94],
        "p99": 1000 * quantiles[98],
        "errors": errors,
    }


def read_sentences(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()][:limit]


def offline_rate(model: Path, backend: str, sentences: list[str]) -> float:
    """Sentences/s of the translator that `nmt translate` uses (batch 32, the bundle's beam)."""
    from nmt.bundle import load_bundle
    from nmt.translator import Translator

    translator = Translator.from_bundle(load_bundle(model), "cpu", backend, batch_size=32)
    translator.translate_best(sentences[:32])  # warm up
    started = time.perf_counter()
    translator.translate_best(sentences)
    return len(sentences) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "transformer-en-de")
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--src", type=Path, default=ROOT / "data" / "multi30k" / "test_2016_flickr.en.gz")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per cell")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per cell")
    parser.add_argument("--hello-port", type=int, help=argparse.SUPPRESS)  # run the yardstick app
    args = parser.parse_args()
    if args.hello_port:
        import uvicorn

        uvicorn.run(
            hello_app(), host="127.0.0.1", port=args.hello_port, log_level="warning", access_log=False
        )
        return

    sentences = read_sentences(args.src, 1000)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    env = {**os.environ, "NMT_BACKEND": args.backend}
    serve_port, hello_port = free_port(), free_port()
    serve_log, hello_log = logs / f"serve_load-{serve_port}.log", logs / f"serve_load-{hello_port}.log"
    with serve_log.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "nmt", "serve", "--models", str(args.model), "--port", str(serve_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with hello_log.open("w") as out:
        hello = subprocess.Popen(
            [sys.executable, __file__, "--hello-port", str(hello_port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_ready("127.0.0.1", serve_port, "/ready", serve, serve_log)
        wait_ready("127.0.0.1", hello_port, "/hello", hello, hello_log)
        offline = offline_rate(args.model, args.backend, sentences)
        results = asyncio.run(run_levels(args, sentences, serve_port, hello_port))
    finally:
        for process in (serve, hello):
            process.terminate()
            process.wait(timeout=30)
    report(args, results, offline, len(sentences))


async def run_levels(args, sentences: list[str], serve_port: int, hello_port: int) -> dict:
    hello_request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    cached = sentences[:64]
    warm = post("/v1/translate", {"text": cached, "source": "en", "target": "de"})
    connection = await Connection.open(serve_port)
    status, _ = await connection.request(warm)
    connection.close()
    assert status == 200, "warming the cache failed"
    results: dict = {}
    for level, concurrency in enumerate(args.levels):
        hits = [
            post("/v1/translate", {"text": cached[i % len(cached)], "source": "en", "target": "de"})
            for i in range(args.requests)
        ]
        misses = [
            post("/v1/translate", {"text": s, "source": "en", "target": "de", "max_length": 500 - level})
            for s in sentences[: args.requests]
        ]
        results[concurrency] = {
            "hello": await load(hello_port, [hello_request] * args.requests, concurrency, args.seconds),
            "hit": await load(serve_port, hits, concurrency, args.seconds),
            "miss": await load(serve_port, misses, concurrency, args.seconds),
        }
        print(f"concurrency {concurrency} done", file=sys.stderr)
    return results


def report(args, results: dict, offline: float, sentences: int) -> None:
    rows = []
    for concurrency, cells in results.items():
        for kind in ("hello", "hit", "miss"):
            r = cells[kind]
            rows.append(
                [
                    concurrency,
                    kind,
                    r["requests"],
                    f"{r['rps']:.1f}",
                    f"{r['p50']:.2f}",
                    f"{r['p95']:.2f}",
                    f"{r['p99']:.2f}",
                    r["errors"],
                ]
            )
    print(
        f"model {args.model}, backend {args.backend}, {os.cpu_count()} cores, loopback, one uvicorn worker each"
    )
    print_table(["clients", "kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows)
    print(
        f"offline translate ({args.backend}, batch 32, bundle's beam): {offline:.1f} sentences/s on {sentences} sentences"
    )
    low, high = min(results), 32 if 32 in results else max(results)
    miss_scaling = results[high]["miss"]["rps"] / results[low]["miss"]["rps"]
    miss_offline = results[high]["miss"]["rps"] / offline
    hit_hello = results[high]["hit"]["rps"] / results[high]["hello"]["rps"]
    hit_p50 = results[low]["hit"]["p50"]
    errors = sum(cell["errors"] for cells in results.values() for cell in cells.values())
    print(f"miss {high} / miss {low}: {miss_scaling:.2f}x;  miss {high} / offline: {miss_offline:.2f}x")
    print(
        f"hit {high} / hello {high}: {hit_hello:.2f}x;  hit p50 at {low}: {hit_p50:.2f} ms;  errors: {errors}"
    )
    verdict(
        f"miss scaling >= 4x ({miss_scaling:.2f}), >= 0.8x offline ({miss_offline:.2f}), "
        f"hit >= 0.4x hello ({hit_hello:.2f}), hit p50 <= 3 ms ({hit_p50:.2f}), no errors ({errors})",
        miss_scaling >= 4 and miss_offline >= 0.8 and hit_hello >= 0.4 and hit_p50 <= 3 and errors == 0,
    )


if __name__ == "__main__":
    main()
