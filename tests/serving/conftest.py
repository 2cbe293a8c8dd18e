"""Fixtures for the service's tests: a real redis-server the suite starts itself, a models folder
with tiny bundles and their ONNX exports, and real uvicorn servers (`nmt serve` subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_nmt, tiny_recipe, write_recipe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on a free port, with no persistence; stop() and start() again."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server not found: the service's tests need a real one (make redis)")
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(
            args, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_dir(trained_bundles: dict[str, Path], tmp_path_factory) -> Path:
    """The tiny Transformer and attention-LSTM bundles, each with its ONNX export, in one folder."""
    folder = tmp_path_factory.mktemp("models")
    for arch in ("transformer", "lstm_attention"):
        target = folder / f"tiny-{arch}"  # the bundle's own name (see tiny_recipe)
        shutil.copytree(trained_bundles[arch], target)
        run_nmt("export", "--model", str(target), "--format", "onnx")
    return folder


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def start_server(models: Path, folder: Path, workers: int = 1, **settings: str) -> Server:
    """`nmt serve` in a subprocess with NMT_* settings; returns once /ready answers 200."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **{f"NMT_{k.upper()}": v for k, v in settings.items()}}
    command = [sys.executable, "-m", "nmt", "serve", "--models", str(models), "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nmt serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return Server(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"nmt serve did not get ready:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def serve(models_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers with the given settings; all are stopped after the test."""
    servers: list[Server] = []

    def start(workers: int = 1, **settings: str) -> Server:
        servers.append(start_server(models_dir, tmp_path, workers, **settings))
        return servers[-1]

    yield start
    for server in servers:
        stop_server(server)


@pytest.fixture(scope="module")
def ab_server(models_dir: Path, tmp_path_factory) -> Iterator[Server]:
    """One server for the module: in-process cache, the two tiny models split 50/50 on en-de."""
    names = sorted(p.name for p in models_dir.iterdir())  # folder names are the bundle names
    split = json.dumps({"en-de": {name: 50 for name in names}})
    server = start_server(models_dir, tmp_path_factory.mktemp("ab"), ab_split=split)
    yield server
    stop_server(server)


def metric(text: str, name: str) -> float:
    """The sum of every sample of a Prometheus metric whose line starts with `name`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def big_job(texts: int = 64, sentences: int = 40, tag: str = "") -> dict:
    """`texts` texts of `sentences` distinct sentences each (distinct: nothing comes from the cache)."""
    text = [
        " ".join(
            f"A man with {i * sentences + j}{tag} red balloons walks down the street."
            for j in range(sentences)
        )
        for i in range(texts)
    ]
    return {"text": text, "source": "en", "target": "de", "model": "tiny-transformer"}


@pytest.fixture(scope="session")
def two_way_models_dir(models_dir: Path, tiny_corpus: Path, tmp_path_factory) -> Path:
    """The tiny en-de models and a tiny de-en Transformer: two source languages to tell apart."""
    folder = tmp_path_factory.mktemp("two-way-models")
    shutil.copytree(models_dir, folder, dirs_exist_ok=True)
    run_dir = tmp_path_factory.mktemp("run-de-en")
    recipe = tiny_recipe(tiny_corpus, run_dir / "out", "transformer")
    recipe["name"] = "tiny-transformer-de-en"
    recipe["data"] = {
        "src_lang": "de",
        "tgt_lang": "en",
        "train": {"src": str(tiny_corpus / "train.de"), "tgt": str(tiny_corpus / "train.en")},
        "valid": {"src": str(tiny_corpus / "val.de"), "tgt": str(tiny_corpus / "val.en")},
    }
    result = run_nmt("train", "--config", str(write_recipe(run_dir / "recipe.yaml", recipe)))
    target = folder / "tiny-transformer-de-en"
    shutil.copytree(result.stdout.strip().splitlines()[-1], target)
    run_nmt("export", "--model", str(target), "--format", "onnx")
    return folder
