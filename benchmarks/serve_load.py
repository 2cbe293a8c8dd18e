"""The translation service under load over loopback HTTP, judged against a FastAPI hello-world.

    .venv/bin/python benchmarks/serve_load.py [--model models/transformer-en-de] [--backend onnx]
        [--src data/multi30k/test_2016_flickr.en.gz (else ../shared/data/multi30k/...)]
        [--phases levels,hits,redis-outage,fairness] [--seconds 10] [--outage-seconds 60]
        [--fairness-seconds 20]

It starts what the chosen phases need as subprocesses, and always stops them again (also on
Ctrl-C, SIGTERM or a failure): a redis-server of its own (free port, no persistence), `nmt serve`
on the bundle with NMT_REDIS_URL pointing at it (the "redis server"), a second `nmt serve` with the
in-process cache (the "memory server"), and a one-endpoint FastAPI app (same uvicorn, one worker
each). The load comes from wrk (C, one thread: the box has 2 cores) where the client must not be
the bottleneck, and from a few lines of raw asyncio HTTP/1.1 (keep-alive) elsewhere. Phases, run
in this order (all by default, ~8 minutes with the defaults on 2 cores):

levels  At 1, 8, 32 and 64 concurrent clients (--levels; each cell bounded by --seconds and
        --requests), asyncio client: hello (GET /hello), hit (cached sentences), miss (unique
        test sentences; each level asks with its own `max_length`, which changes the cache key
        and nothing else, so every request decodes), and the offline throughput of the same
        backend and beam (the translator `nmt translate` uses, batch 32). Targets: miss at 32
        >= 4x miss at 1 and >= 0.8x offline; hit p50 <= 3 ms at 1; no errors. (Hits against
        hello are judged in the hits phase: this Python client is the bottleneck at ~10k req/s.)
hits    wrk, 32 connections, --seconds per run, contenders interleaved (hello, redis hit, memory
        hit, hello, redis hit, memory hit) after a 1 s warm-up each, POST bodies cycling over
        64 cached sentences. Targets: Redis hits >= 0.5x hello-world req/s; in-process (memory)
        hits >= 0.4x; Redis-hit p99 <= 5x its p50 (in every round); no non-2xx answers and no
        socket errors.
redis-outage
        wrk, 300 connections (30 s timeout, so slow answers are not errors) for --outage-seconds
        against the redis server, cycling over 200 test sentences cached beforehand; the
        redis-server is killed (SIGKILL) at 1/3 of the time and restarted, empty, on the same
        port at 2/3. Targets: 0 failed requests (non-2xx, socket errors, timeouts); the cache is
        used again within 5 s of the restart: Redis's own INFO, polled every 100 ms, counts a
        hit (`keyspace_hits`) for the service, i.e. the service wrote a translation to the new
        Redis and read it back. The first read and first write are printed too.
fairness
        One client posts 64 texts of ~4,999 characters (sentences of the training split beside
        --src, distinct so that the service's per-request deduplication does not shrink the job;
        --src's when there is none) to the memory server, which runs with
        NMT_REQUEST_TIMEOUT_S=600 and NMT_QUEUE_MAX_SENTENCES=100000 so the job is neither cut
        by the deadline nor refused for its size; meanwhile --fairness-clients clients send
        one-sentence requests (test sentences, each with its own cache key) one after another
        for --fairness-seconds or until the job ends. Target: their p95 latency <= 2 s, every
        one answered 200. How the big job ended (status, seconds) is printed.

Every target prints `target: ... -> PASS/FAIL`; the last line sums them all up. wrk and
redis-server come from Debian (`apt-get install wrk redis-server`). Logs of the servers are kept
in the folder named on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import default_data, print_table, verdict  # noqa: E402

PHASES = ("levels", "hits", "redis-outage", "fairness")
HIT_SENTENCES = 64  # the cached sentences the hit cells cycle over
OUTAGE_SENTENCES = 200  # the sentences the outage phase cycles over
OUTAGE_CONNECTIONS = 300
HIT_CONNECTIONS = 32
BIG_TEXTS, BIG_CHARS = 64, 4999  # the fairness phase's big job
FAIRNESS_SERVER_ENV = {"NMT_REQUEST_TIMEOUT_S": "600", "NMT_QUEUE_MAX_SENTENCES": "100000"}

JUDGED: list[bool] = []  # every target's outcome, for the closing line


def judge(description: str, passed: bool) -> None:
    JUDGED.append(passed)
    verdict(description, passed)


def note(message: str) -> None:
    """Progress, on stderr (stdout holds the results)."""
    print(f"serve_load: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- subprocesses


class Processes:
    """The one place that starts and stops subprocesses. Each runs in its own process group with
    its output in `folder`/NAME.log; leaving the `with` block stops every one still running
    (SIGTERM, then SIGKILL), whatever ended the block."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        capture: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start `command`; its stdout is piped back when `capture`, else logged with its stderr."""
        with self.log(name).open("a") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE if capture else log,
                stderr=log if capture else subprocess.STDOUT,
                text=capture,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children ourselves
            )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen, kill: bool = False) -> None:
        """SIGKILL at once when `kill`, else SIGTERM and SIGKILL after 20 s."""
        if process.poll() is None:
            self._signal(process, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process in self.running:
            self.running.remove(process)

    @staticmethod
    def _signal(process: subprocess.Popen, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, path: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    """Until GET `path` answers 200; exits with the log's tail if the process dies first."""
    deadline = time.monotonic() + seconds
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"serve_load: {log.stem} exited:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"serve_load: {log.stem} did not get ready in {seconds:.0f} s (see {log})")


class RedisServer:
    """A redis-server on a fixed free port, no persistence; kill() and start() again, empty."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = self.processes.start("redis-server", command, cwd=self.processes.folder)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"serve_load: redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process, kill=True)
            self.process = None

    def stats(self) -> dict[str, int]:
        """Redis's own counters: keyspace hits, and the read and write commands it ran."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            stats, commands = client.info("stats"), client.info("commandstats")
        finally:
            client.close()

        def calls(*names: str) -> int:
            return sum(commands.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)

        return {
            "hits": stats["keyspace_hits"],
            "reads": calls("get", "mget"),
            "writes": calls("set", "mset", "setex"),
        }


@dataclass
class Services:
    """The ports of what is running (None: not needed by the chosen phases)."""

    hello: int | None = None
    memory: int | None = None
    redis_serve: int | None = None
    redis: RedisServer | None = None


def start_serve(processes: Processes, name: str, args: argparse.Namespace, env: dict[str, str]) -> int:
    port = free_port()
    command = [sys.executable, "-m", "nmt", "serve", "--models", str(args.model), "--port", str(port)]
    process = processes.start(
        name, command, env={**os.environ, "NMT_BACKEND": args.backend, "NMT_SHUTDOWN_TIMEOUT_S": "5", **env}
    )
    wait_ready(port, "/ready", process, processes.log(name))
    return port


def start_services(processes: Processes, args: argparse.Namespace, phases: set[str]) -> Services:
    """What the phases need. The two `nmt serve` start one after the other: the first one may
    export the bundle to ONNX, which two processes must not do at once."""
    services = Services()
    if phases & {"hits", "redis-outage"}:
        services.redis = RedisServer(processes)
        services.redis.start()
    hello = None
    if phases & {"levels", "hits"}:
        services.hello = free_port()
        command = [sys.executable, __file__, "--hello-port", str(services.hello)]
        hello = processes.start("hello", command)
    if phases & {"levels", "hits", "fairness"}:
        services.memory = start_serve(processes, "memory-serve", args, FAIRNESS_SERVER_ENV)
    if services.redis is not None:
        services.redis_serve = start_serve(
            processes, "redis-serve", args, {"NMT_REDIS_URL": services.redis.url}
        )
    if hello is not None:
        wait_ready(services.hello, "/hello", hello, processes.log("hello"))
    return services


# --------------------------------------------------------------------------- HTTP helpers


def translate_body(text: str | list[str], **options: int) -> dict:
    return {"text": text, "source": "en", "target": "de", **options}


def http_call(
    port: int, method: str, path: str, body: dict | None = None, timeout: float = 120
) -> tuple[int, str]:
    """One blocking request (for set-up and probes, not for load): status and body text."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, data, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def warm(port: int, sentences: list[str]) -> None:
    """Translate `sentences` (64 per request) so they are cached, and check that they are."""
    for start in range(0, len(sentences), 64):
        status, text = http_call(port, "POST", "/v1/translate", translate_body(sentences[start : start + 64]))
        if status != 200:
            sys.exit(f"serve_load: warming the cache on port {port} failed: {status} {text[:300]}")
    status, text = http_call(port, "POST", "/v1/translate", translate_body(sentences[0]))
    if status != 200 or not json.loads(text)["translations"][0]["cached"]:
        note(f"warning: a warmed sentence was not answered from the cache on port {port}: {text[:300]}")


def metric_total(port: int, name: str) -> float | None:
    """The sum of a Prometheus counter over its labels, from /metrics (None if unreadable)."""
    try:
        status, text = http_call(port, "GET", "/metrics", timeout=10)
    except OSError:
        return None
    if status != 200:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read one Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=2**20))

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


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99); the one value when there is one, NaN when none."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


def read_sentences(path: Path, limit: int | None = None) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()][:limit]


# --------------------------------------------------------------------------- wrk

WRK_SCRIPT = r"""
-- The JSON bodies in the file named by the first script argument, POSTed in turn (a GET of the
-- URL's path when none is named); done() prints one line "wrk-json {...}" (latencies in us,
-- and the answers by status when the script also defines response(): see WRK_COUNT_STATUSES).
local prepared = {}
local turn = 0
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  if args[1] then
    for body in io.lines(args[1]) do
      prepared[#prepared + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
    end
  else
    prepared[1] = wrk.format("GET")
  end
end

function request()
  turn = turn % #prepared + 1
  return prepared[turn]
end

function done(summary, latency, _)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local statuses = {}
  for status, n in pairs(counts) do
    statuses[#statuses + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d, "p50_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "statuses": {%s}}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(statuses, ", ")))
end
"""

# Counting answers by status costs wrk a Lua call per response: only where the rate is low.
WRK_COUNT_STATUSES = r"""
statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
"""


@dataclass
class Wrk:
    """Runs wrk with WRK_SCRIPT; `start` returns the process, `result` its parsed summary."""

    processes: Processes
    folder: Path

    def script(self, count_statuses: bool) -> Path:
        path = self.folder / ("wrk-statuses.lua" if count_statuses else "wrk.lua")
        if not path.exists():
            path.write_text(WRK_SCRIPT + (WRK_COUNT_STATUSES if count_statuses else ""))
        return path

    def start(
        self,
        url: str,
        connections: int,
        seconds: float,
        bodies: Path | None = None,
        timeout_s: int = 2,
        count_statuses: bool = False,
    ) -> subprocess.Popen:
        """wrk on one thread (the box has 2 cores) for `seconds`, in the background."""
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        command += ["--timeout", f"{timeout_s}s", "-s", str(self.script(count_statuses)), url]
        if bodies is not None:
            command += ["--", str(bodies)]
        return self.processes.start("wrk", command, capture=True)

    def result(self, process: subprocess.Popen) -> dict:
        """Wait for wrk: requests, req/s, p50/p99/max in ms, non-2xx answers (status >= 400 unless
        counted by status), socket errors, timeouts, and the answers by status if counted."""
        out, _ = process.communicate()
        self.processes.stop(process)
        lines = [line for line in out.splitlines() if line.startswith("wrk-json ")]
        if process.returncode != 0 or not lines:
            sys.exit(f"serve_load: wrk failed ({process.returncode}):\n{out[-2000:]}")
        raw = json.loads(lines[-1].removeprefix("wrk-json "))
        statuses = {int(status): n for status, n in raw["statuses"].items()}
        counted = sum(n for status, n in statuses.items() if not 200 <= status < 300)
        return {
            "requests": raw["requests"],
            "seconds": raw["duration_us"] / 1e6,
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50": raw["p50_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "max": raw["max_us"] / 1000,
            "http_errors": counted if statuses else raw["status_errors"],
            "socket_errors": raw["connect"] + raw["read"] + raw["write"],
            "timeouts": raw["timeout"],
            "statuses": dict(sorted(statuses.items())),
        }

    def run(self, url: str, connections: int, seconds: float, bodies: Path | None = None) -> dict:
        return self.result(self.start(url, connections, seconds, bodies))


def write_bodies(path: Path, bodies: list[dict]) -> Path:
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return path


# --------------------------------------------------------------------------- phase: levels


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
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": 1000 * percentile(latencies, 50),
        "p95": 1000 * percentile(latencies, 95),
        "p99": 1000 * percentile(latencies, 99),
        "errors": errors,
    }


def offline_rate(model: Path, backend: str, sentences: list[str]) -> float:
    """Sentences/s of the translator that `nmt translate` uses (batch 32, the bundle's beam)."""
    from nmt.bundle import load_bundle
    from nmt.translator import Translator

    translator = Translator.from_bundle(load_bundle(model), "cpu", backend, batch_size=32)
    translator.translate_best(sentences[:32])  # warm up
    started = time.perf_counter()
    translator.translate_best(sentences)
    return len(sentences) / (time.perf_counter() - started)


async def run_levels(
    args: argparse.Namespace, sentences: list[str], serve_port: int, hello_port: int
) -> dict:
    hello_request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    cached = sentences[:HIT_SENTENCES]
    results: dict = {}
    for level, concurrency in enumerate(args.levels):
        hits = [post("/v1/translate", translate_body(cached[i % len(cached)])) for i in range(args.requests)]
        misses = [
            post("/v1/translate", translate_body(s, max_length=500 - level))
            for s in sentences[: args.requests]
        ]
        results[concurrency] = {
            "hello": await load(hello_port, [hello_request] * args.requests, concurrency, args.seconds),
            "hit": await load(serve_port, hits, concurrency, args.seconds),
            "miss": await load(serve_port, misses, concurrency, args.seconds),
        }
        note(f"levels: concurrency {concurrency} done")
    return results


def phase_levels(args: argparse.Namespace, services: Services, sentences: list[str]) -> None:
    assert services.memory is not None and services.hello is not None
    print("\n== levels: asyncio client, memory server and hello-world, by concurrency")
    warm(services.memory, sentences[:HIT_SENTENCES])
    offline = offline_rate(args.model, args.backend, sentences)
    results = asyncio.run(run_levels(args, sentences, services.memory, services.hello))
    rows = [
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
        for concurrency, cells in results.items()
        for kind, r in cells.items()
    ]
    print_table(["clients", "kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows)
    print(
        f"offline translate ({args.backend}, batch 32, bundle's beam): {offline:.1f} sentences/s on {len(sentences)} sentences"
    )
    low, high = min(results), 32 if 32 in results else max(results)
    miss_scaling = results[high]["miss"]["rps"] / results[low]["miss"]["rps"]
    miss_offline = results[high]["miss"]["rps"] / offline
    hit_p50 = results[low]["hit"]["p50"]
    errors = sum(cell["errors"] for cells in results.values() for cell in cells.values())
    # hits against hello-world are judged in the hits phase, with wrk: this Python client is itself
    # the bottleneck at the hello-world's ~10,000 req/s, and a cell of 3,000 requests lasts 0.3 s
    judge(
        f"levels: miss {high} >= 4x miss {low} ({miss_scaling:.2f}x), >= 0.8x offline ({miss_offline:.2f}x), "
        f"hit p50 at {low} <= 3 ms ({hit_p50:.2f}), no errors ({errors})",
        miss_scaling >= 4 and miss_offline >= 0.8 and hit_p50 <= 3 and errors == 0,
    )


# --------------------------------------------------------------------------- phase: hits


def phase_hits(args: argparse.Namespace, services: Services, wrk: Wrk, sentences: list[str]) -> None:
    assert services.memory is not None and services.hello is not None and services.redis_serve is not None
    cached = sentences[:HIT_SENTENCES]
    print(
        f"\n== hits: wrk, {HIT_CONNECTIONS} connections, 1 thread, {args.seconds:.0f} s per run, "
        f"{len(cached)} cached sentences, interleaved"
    )
    warm(services.redis_serve, cached)
    warm(services.memory, cached)
    bodies = write_bodies(wrk.folder / "hits.jsonl", [translate_body(s) for s in cached])
    contenders = {
        "hello": (f"http://127.0.0.1:{services.hello}/hello", None),
        "redis hit": (f"http://127.0.0.1:{services.redis_serve}/v1/translate", bodies),
        "memory hit": (f"http://127.0.0.1:{services.memory}/v1/translate", bodies),
    }
    for url, body in contenders.values():  # warm-up, not counted
        wrk.run(url, HIT_CONNECTIONS, 1, body)
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(2):
        for name, (url, body) in contenders.items():
            runs[name].append(wrk.run(url, HIT_CONNECTIONS, args.seconds, body))
            note(f"hits: {name} done")
    report_hits(runs)


def report_hits(runs: dict[str, list[dict]]) -> None:
    rows = [
        [
            name,
            n + 1,
            r["requests"],
            f"{r['rps']:.0f}",
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['max']:.1f}",
        ]
        + [r["http_errors"], r["socket_errors"] + r["timeouts"]]
        for n in range(2)
        for name, results in runs.items()
        for r in results[n : n + 1]
    ]
    print_table(
        ["contender", "round", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "socket"], rows
    )

    def rate(name: str) -> float:
        return sum(r["requests"] for r in runs[name]) / sum(r["seconds"] for r in runs[name])

    redis_hello, memory_hello = rate("redis hit") / rate("hello"), rate("memory hit") / rate("hello")
    print(
        f"req/s over both rounds: hello {rate('hello'):.0f}, redis hit {rate('redis hit'):.0f}, "
        f"memory hit {rate('memory hit'):.0f}"
    )
    worst = max(runs["redis hit"], key=lambda r: r["p99"] / max(r["p50"], 1e-3))
    tail = worst["p99"] / max(worst["p50"], 1e-3)
    errors = sum(r["http_errors"] + r["socket_errors"] + r["timeouts"] for rs in runs.values() for r in rs)
    judge(f"hits: Redis hits >= 0.5x hello-world req/s ({redis_hello:.2f}x)", redis_hello >= 0.5)
    judge(f"hits: in-process hits >= 0.4x hello-world req/s ({memory_hello:.2f}x)", memory_hello >= 0.4)
    judge(
        f"hits: Redis-hit p99 <= 5x p50 in every round (worst {tail:.1f}x: p50 {worst['p50']:.2f} ms, "
        f"p99 {worst['p99']:.2f} ms)",
        tail <= 5,
    )
    judge(f"hits: no non-2xx answers or socket errors ({errors})", errors == 0)


# --------------------------------------------------------------------------- phase: redis-outage


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def watch_redis(redis: RedisServer, since: float, until: float) -> dict[str, float | None]:
    """Seconds from `since` until the restarted Redis first served the service a read, a write and
    a hit, polling its INFO every 100 ms until all three happened or `until` passes."""
    seen: dict[str, float | None] = {"reads": None, "writes": None, "hits": None}
    while time.monotonic() < until and None in seen.values():
        try:
            stats = redis.stats()
        except Exception:  # noqa: BLE001 (redis-py's errors: not up yet)
            stats = {}
        for key in seen:
            if seen[key] is None and stats.get(key, 0) > 0:
                seen[key] = time.monotonic() - since
        time.sleep(0.1)
    return seen


def phase_outage(args: argparse.Namespace, services: Services, wrk: Wrk, sentences: list[str]) -> None:
    assert services.redis is not None and services.redis_serve is not None
    redis, port, total = services.redis, services.redis_serve, args.outage_seconds
    pool = sentences[:OUTAGE_SENTENCES]
    kill_at, restart_at = total / 3, 2 * total / 3
    print(
        f"\n== redis-outage: wrk, {OUTAGE_CONNECTIONS} connections, 30 s timeout, {total:.0f} s, "
        f"{len(pool)} cached sentences; redis-server killed at {kill_at:.0f} s, restarted empty at {restart_at:.0f} s"
    )
    warm(port, pool)
    counters = ("nmt_cache_hits_total", "nmt_cache_misses_total", "nmt_redis_errors_total")
    before = {name: metric_total(port, name) for name in counters}
    bodies = write_bodies(wrk.folder / "outage.jsonl", [translate_body(s) for s in pool])
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}/v1/translate"
    process = wrk.start(url, OUTAGE_CONNECTIONS, total, bodies, timeout_s=30, count_statuses=True)
    sleep_until(started + kill_at)
    redis.kill()
    note(f"redis-outage: redis-server killed at {time.monotonic() - started:.1f} s")
    sleep_until(started + restart_at)
    redis.start()
    restarted = time.monotonic()
    note(f"redis-outage: redis-server restarted at {restarted - started:.1f} s")
    used = watch_redis(redis, restarted, until=max(started + total, restarted + 10))
    result = wrk.result(process)
    after = {name: metric_total(port, name) for name in counters}
    report_outage(result, used, before, after)


def report_outage(result: dict, used: dict[str, float | None], before: dict, after: dict) -> None:
    failed = result["http_errors"] + result["socket_errors"] + result["timeouts"]
    print(
        f"requests {result['requests']} ({result['rps']:.0f}/s), p50 {result['p50']:.0f} ms, "
        f"p99 {result['p99']:.0f} ms, max {result['max']:.0f} ms; non-2xx {result['http_errors']}, "
        f"socket errors {result['socket_errors']}, timeouts {result['timeouts']}; answers by status: "
        + ", ".join(f"{status}: {n}" for status, n in result["statuses"].items())
    )
    deltas = [
        f"{name.removeprefix('nmt_').removesuffix('_total')} +{after[name] - before[name]:.0f}"
        for name in before
        if before[name] is not None and after[name] is not None
    ]
    print(f"service counters over the phase: {', '.join(deltas) or 'n/a (/metrics unreadable)'}")

    def seconds(key: str) -> str:
        return "never" if used[key] is None else f"{used[key]:.1f} s"

    print(
        f"after the restart, Redis saw the service's first read at {seconds('reads')}, "
        f"first write at {seconds('writes')}, first hit at {seconds('hits')}"
    )
    judge(f"redis-outage: 0 failed requests ({failed} of {result['requests']})", failed == 0)
    hit = used["hits"]
    judge(
        f"redis-outage: cache used again <= 5 s after the restart (first Redis hit at {seconds('hits')})",
        hit is not None and hit <= 5,
    )


# --------------------------------------------------------------------------- phase: fairness


def big_texts(pool: list[str]) -> list[str]:
    """BIG_TEXTS texts of at most BIG_CHARS characters: `pool`'s sentences joined with spaces, in
    order (the pool repeats only when it runs out)."""
    sentences = itertools.cycle(pool)
    texts = []
    for _ in range(BIG_TEXTS):
        text = next(sentences)
        while True:
            sentence = next(sentences)
            if len(text) + 1 + len(sentence) > BIG_CHARS:
                break
            text += " " + sentence
        texts.append(text)
    return texts


async def timed_request(port: int, raw: bytes) -> tuple[int, float]:
    """Status (0: the connection failed) and seconds of one request on a fresh connection."""
    started = time.perf_counter()
    connection = await Connection.open(port)
    try:
        status, _ = await connection.request(raw)
    except (OSError, asyncio.IncompleteReadError):
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - started


async def small_clients(
    port: int, requests: Iterator[bytes], clients: int, seconds: float, big: asyncio.Task
) -> list:
    """(status, seconds) of one-sentence requests sent one after another by each client, until
    `seconds` pass or the big job ends."""
    deadline = time.perf_counter() + seconds
    answers: list[tuple[int, float]] = []

    async def client() -> None:
        connection = await Connection.open(port)
        try:
            for raw in requests:
                if time.perf_counter() > deadline or big.done():
                    return
                started = time.perf_counter()
                try:
                    status, _ = await connection.request(raw)
                except (OSError, asyncio.IncompleteReadError):
                    answers.append((0, time.perf_counter() - started))
                    return
                answers.append((status, time.perf_counter() - started))
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


async def run_fairness(args: argparse.Namespace, port: int, texts: list[str], sentences: list[str]) -> dict:
    big_raw = post("/v1/translate", translate_body(texts))
    # every small request its own cache key: a sentence and a max_length no other phase uses
    small = (
        post(
            "/v1/translate",
            translate_body(sentences[i % len(sentences)], max_length=399 - i // len(sentences)),
        )
        for i in itertools.count()
    )
    started = time.perf_counter()
    big = asyncio.ensure_future(timed_request(port, big_raw))
    await asyncio.sleep(1.0)  # the job is in: sent, parsed, queued
    small_started = time.perf_counter()
    answers = await small_clients(port, small, args.fairness_clients, args.fairness_seconds, big)
    window = (small_started - started, time.perf_counter() - started)
    try:
        big_status, big_seconds = await asyncio.wait_for(
            asyncio.shield(big), max(0.0, started + args.big_job_wait - time.perf_counter())
        )
    except asyncio.TimeoutError:
        big.cancel()
        big_status, big_seconds = None, time.perf_counter() - started
    return {"answers": answers, "window": window, "big": (big_status, big_seconds)}


def phase_fairness(
    args: argparse.Namespace, services: Services, sentences: list[str], pool: list[str]
) -> None:
    assert services.memory is not None
    texts = big_texts(pool)
    print(
        f"\n== fairness: one job of {len(texts)} texts x <= {BIG_CHARS} characters "
        f"({sum(map(len, texts))} characters, {len(set(pool))} distinct sentences in its pool) on the memory "
        f"server ({' '.join(f'{k}={v}' for k, v in FAIRNESS_SERVER_ENV.items())}); meanwhile "
        f"{args.fairness_clients} clients send one-sentence cache misses one after another"
    )
    result = asyncio.run(run_fairness(args, services.memory, texts, sentences))
    latencies = [seconds for _, seconds in result["answers"]]
    not_ok = sum(status != 200 for status, _ in result["answers"])
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    big_status, big_seconds = result["big"]
    ended = (
        f"answered {big_status} after {big_seconds:.1f} s"
        if big_status is not None
        else f"not answered after {big_seconds:.0f} s (connection closed)"
    )
    print(
        f"small requests: {len(latencies)} from {result['window'][0]:.1f} s to {result['window'][1]:.1f} s "
        f"after the job was sent, p50 {p50:.3f} s, p95 {p95:.3f} s, "
        f"max {max(latencies, default=float('nan')):.3f} s, not 200: {not_ok}"
    )
    print(f"big job: {ended}")
    ran = big_status is None or big_status in (200, 504)
    problem = "" if ran else f"; the big job did not run (answered {big_status}): nothing to be fair against"
    judge(
        f"fairness: one-sentence p95 <= 2 s while the big job runs ({p95:.3f} s over {len(latencies)}, "
        f"{not_ok} not 200{problem})",
        ran and len(latencies) > 0 and p95 <= 2 and not_ok == 0,
    )


# --------------------------------------------------------------------------- main


def hello_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def default_src() -> Path:
    """Multi30k's English test set, wherever `harness.default_data` finds Multi30k."""
    return default_data() / "test_2016_flickr.en.gz"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--model",
        type=Path,
        default=ROOT / "models" / "transformer-en-de",
        help="bundle (default: %(default)s)",
    )
    add(
        "--backend",
        choices=["onnx", "torch", "ctranslate2", "auto"],
        default="onnx",
        help="NMT_BACKEND (default: %(default)s)",
    )
    add("--src", type=Path, default=default_src(), help="English test sentences (default: %(default)s)")
    add("--phases", default=",".join(PHASES), help="comma-separated, of %(default)s (default: all)")
    add(
        "--levels",
        type=int,
        nargs="+",
        default=[1, 8, 32, 64],
        help="levels: concurrencies (default: %(default)s)",
    )
    add(
        "--seconds",
        type=float,
        default=10.0,
        help="levels: most seconds per cell; hits: seconds per run (default: %(default)s)",
    )
    add("--requests", type=int, default=3000, help="levels: most requests per cell (default: %(default)s)")
    add(
        "--outage-seconds",
        type=float,
        default=60.0,
        help="redis-outage: seconds of load (default: %(default)s)",
    )
    add(
        "--fairness-seconds",
        type=float,
        default=20.0,
        help="fairness: seconds of small requests (default: %(default)s)",
    )
    add(
        "--fairness-clients",
        type=int,
        default=4,
        help="fairness: small-request clients (default: %(default)s)",
    )
    add(
        "--big-job-wait",
        type=float,
        default=150.0,
        help="fairness: most seconds to wait for the big job (default: %(default)s)",
    )
    add("--hello-port", type=int, help=argparse.SUPPRESS)  # run the yardstick app
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"--phases: unknown {sorted(phases - set(PHASES))}, choose from {','.join(PHASES)}")
    args.phases = [phase for phase in PHASES if phase in phases]
    args.model = args.model.resolve()
    return args


def check_tools(phases: list[str]) -> None:
    if not {"hits", "redis-outage"} & set(phases):
        return
    for tool, package in (("wrk", "wrk"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            sys.exit(f"serve_load: {tool} not found: apt-get install {package}")


def big_job_pool(src: Path) -> list[str]:
    """The training split beside --src when there is one (distinct sentences), else --src."""
    train = src.with_name(src.name.replace("test_2016_flickr", "train"))
    return read_sentences(train if train != src and train.is_file() else src)


def main() -> None:
    args = parse_args()
    if args.hello_port:
        import uvicorn

        uvicorn.run(
            hello_app(), host="127.0.0.1", port=args.hello_port, log_level="warning", access_log=False
        )
        return
    check_tools(args.phases)
    sys.stdout.reconfigure(line_buffering=True)  # results and progress interleave in order
    # stop the servers on Ctrl-C and SIGTERM (also where the shell started us with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sentences = read_sentences(args.src, 1000)
    print(
        f"model {args.model.name}, backend {args.backend}, {os.cpu_count()} cores, loopback, one uvicorn "
        f"worker each; phases {','.join(args.phases)}"
    )
    folder = Path(tempfile.mkdtemp(prefix="serve_load-"))
    note(f"logs in {folder}")
    with Processes(folder) as processes:
        services = start_services(processes, args, set(args.phases))
        wrk = Wrk(processes, folder)
        for phase in args.phases:
            if phase == "levels":
                phase_levels(args, services, sentences)
            elif phase == "hits":
                phase_hits(args, services, wrk, sentences)
            elif phase == "redis-outage":
                phase_outage(args, services, wrk, sentences)
            elif phase == "fairness":
                phase_fairness(args, services, sentences, big_job_pool(args.src))
    print()
    verdict(f"all targets above ({sum(JUDGED)} of {len(JUDGED)} pass)", all(JUDGED))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("serve_load: interrupted (every server it started is stopped)")
