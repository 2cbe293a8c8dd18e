"""Several replicas (issue 11, item 6): two `nmt serve` processes on one real redis-server behind a
real load balancer (Debian's haproxy, started here with a generated config): a translation cached
through one is a hit on the other, A/B variants stay sticky across them, one API key's rate limit
is shared, and killing one instance mid-load fails no request.

haproxy balances round-robin, health-checks GET /ready, and retries a request that met a refused
connection, an empty response or a response timeout on the other server (`retry-on` L7 retries
with `option redispatch 1`; POST included, the request being buffered). A response names the
server that gave it (`X-Served-By`), and a request can pin one with `X-Backend: s1` or `s2`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RedisServer, Server, free_port, start_server, stop_server

HAPROXY_CONFIG = """\
global
    maxconn 2000
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout check 2s
    # a request whose server failed is tried again, on the other server (every retry redispatches)
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request

frontend api
    bind 127.0.0.1:{port}
    default_backend nmt

backend nmt
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server check inter 250ms fall 2 rise 2
    use-server s1 if {{ req.hdr(X-Backend) -m str s1 }}
    use-server s2 if {{ req.hdr(X-Backend) -m str s2 }}
    http-response set-header X-Served-By %[srv_name]
{servers}
"""


class HAProxy:
    """haproxy in the foreground with a generated config, in front of the given servers."""

    def __init__(self, folder: Path, servers: list[Server]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            pytest.fail(
                "haproxy not found: the replica tests need a real load balancer (apt-get install haproxy)"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lines = [
            f"    server s{i} {server.url.removeprefix('http://')}" for i, server in enumerate(servers, 1)
        ]
        self.config = folder / "haproxy.cfg"
        self.config.write_text(HAPROXY_CONFIG.format(port=self.port, servers="\n".join(lines)))
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.fail(
                f"haproxy rejects its config:\n{check.stdout}{check.stderr}\n{self.config.read_text()}"
            )
        self.log = folder / "haproxy.log"
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)], stdout=handle, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"haproxy did not answer on {self.url}:\n{self.log.read_text()[-3000:]}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    servers: list[Server]
    balancer: HAProxy
    redis: RedisServer

    def logs(self) -> str:
        parts = [f"--- {s.log.name}\n{s.log.read_text()[-2000:]}" for s in self.servers]
        return "\n".join(parts + [f"--- haproxy\n{self.balancer.log.read_text()[-3000:]}"])


@pytest.fixture
def cluster(models_dir: Path, tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Cluster]]:
    """Two `nmt serve` on the test's redis-server, with the given settings, behind haproxy."""
    started: list[Cluster] = []

    def start(**settings: str) -> Cluster:
        settings = {"redis_url": redis_server.url, **settings}
        folder = tmp_path / f"cluster-{len(started)}"
        folder.mkdir()
        with ThreadPoolExecutor(2) as pool:  # start both at once
            servers = list(pool.map(lambda _: start_server(models_dir, folder, **settings), range(2)))
        started.append(Cluster(servers, HAProxy(folder, servers), redis_server))
        return started[-1]

    yield start
    for each in started:
        each.balancer.stop()
        for server in each.servers:
            if server.process.poll() is None:
                stop_server(server)


def _ab_split(models_dir: Path) -> str:
    names = sorted(p.name for p in models_dir.iterdir())  # folder names are the bundle names
    return json.dumps({"en-de": {name: 50 for name in names}})


def _translate(client: httpx.Client, text: str, **headers: str) -> httpx.Response:
    return client.post("/v1/translate", json={"text": text, "source": "en", "target": "de"}, headers=headers)


def test_a_translation_cached_by_one_instance_is_a_hit_on_the_other(cluster):
    replicas = cluster(max_length="12")
    first, second = replicas.servers
    with replicas.balancer.client() as balancer, first.client() as one, second.client() as two:
        for pin, other in (("s1", two), ("s2", one)):
            text = f"A woman in a red coat walks her dog number {pin}."
            miss = _translate(balancer, text, **{"X-Backend": pin})
            assert miss.status_code == 200, miss.text
            assert miss.headers["X-Served-By"] == pin
            assert miss.json()["translations"][0]["cached"] is False
            hit = _translate(other, text)  # straight to the other instance
            assert hit.status_code == 200, hit.text
            assert hit.json()["translations"][0]["cached"] is True, (
                f"cached through {pin}, missed on the other instance: {hit.text}"
            )
            assert hit.json()["translations"][0]["text"] == miss.json()["translations"][0]["text"]
        # and through the balancer, round-robin: the second request lands on the other server
        text = "Three children are building a sandcastle."
        replies = [_translate(balancer, text) for _ in range(2)]
    assert {r.headers["X-Served-By"] for r in replies} == {"s1", "s2"}
    assert [r.json()["translations"][0]["cached"] for r in replies] == [False, True]


def test_ab_variant_is_sticky_across_instances(cluster, models_dir):
    replicas = cluster(ab_split=_ab_split(models_dir), max_length="12")
    variants = {}
    with replicas.balancer.client() as balancer:
        for i in range(20):
            client_id = f"client-{i}"
            seen = {}
            for pin in ("s1", "s2"):
                reply = _translate(
                    balancer, "A girl is jumping into a lake.", **{"X-Backend": pin, "X-Client-Id": client_id}
                )
                assert reply.status_code == 200, reply.text
                assert reply.headers["X-Served-By"] == pin
                seen[pin] = reply.headers["X-Model-Variant"]
            assert seen["s1"] == seen["s2"], f"{client_id} got {seen}"
            variants[client_id] = seen["s1"]
    assert set(variants.values()) == {"tiny-lstm_attention", "tiny-transformer"}, variants


def test_one_key_rate_limit_is_shared_by_the_instances(cluster):
    replicas = cluster(api_keys="k1", rate_limit_per_minute="10", max_length="12")
    statuses = []
    with replicas.balancer.client(headers={"Authorization": "Bearer k1"}) as balancer:
        started = time.monotonic()
        for i in range(20):
            reply = _translate(balancer, "A man is reading a newspaper.", **{"X-Backend": f"s{i % 2 + 1}"})
            assert reply.headers["X-Served-By"] == f"s{i % 2 + 1}"
            assert reply.status_code in (200, 429), reply.text
            if reply.status_code == 429:
                assert int(reply.headers["Retry-After"]) >= 1, reply.headers
            statuses.append(reply.status_code)
        elapsed = time.monotonic() - started
    refill = elapsed * 10 / 60  # the bucket refills 10 a minute
    passed = statuses.count(200)
    assert 10 <= passed <= 10 + max(1, int(refill + 1)), (
        f"{passed} of 20 requests passed a shared limit of 10 a minute (in {elapsed:.1f} s): {statuses}"
    )


def test_killing_one_instance_mid_load_fails_no_request(cluster):
    replicas = cluster(max_length="12")
    victim = replicas.servers[0]
    total, threads = 200, 8
    results: list[tuple[int, str]] = []
    done = threading.Event()
    lock = threading.Lock()

    def client_thread(index: int) -> None:
        with replicas.balancer.client() as balancer:
            for n in range(index, total, threads):
                text = f"A dog number {n} runs across the green field."
                try:
                    reply = _translate(balancer, text)
                    outcome = (reply.status_code, f"{reply.headers.get('X-Served-By')} {reply.text[:200]}")
                except httpx.HTTPError as error:
                    outcome = (0, repr(error))
                with lock:
                    results.append(outcome)
                    if len(results) == total // 3:
                        done.set()

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(client_thread, i) for i in range(threads)]
        assert done.wait(120), "the load did not get a third of the way"
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        killed_at = len(results)
        for future in futures:
            future.result()
    failed = [r for r in results if r[0] != 200]
    served_by = {r[1].split(" ", 1)[0] for r in results if r[0] == 200}
    assert len(results) == total
    assert not failed, (
        f"{len(failed)} of {total} requests failed after s1 was killed (at request {killed_at}):\n"
        + "\n".join(f"{status} {text}" for status, text in failed[:10])
        + "\n"
        + replicas.logs()
    )
    assert served_by == {"s1", "s2"}, served_by  # both served before the kill
