"""Downloading Multi30k, against the shared copy: by file:// URL and through a local HTTP server."""

from __future__ import annotations

import filecmp
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nmt.download import MULTI30K_FILES, MULTI30K_SPLITS, download_multi30k
from nmt.errors import DataError
from tests.conftest import MULTI30K

pytestmark = pytest.mark.usefixtures("multi30k")  # fails, never skips, when the corpus is missing

EN_FILES = [f"{split}.en.gz" for split in MULTI30K_SPLITS]


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files whole (200) or, when the server honours ranges, from ``Range: bytes=N-`` (206)."""

    server: RangeServer

    def do_GET(self) -> None:
        requested = self.headers.get("Range")
        self.server.requests.append((self.path, requested))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if requested and self.server.honour_range:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, format: str, *args: object) -> None:
        pass


class RangeServer(ThreadingHTTPServer):
    requests: list[tuple[str, str | None]]
    honour_range: bool


@pytest.fixture
def server() -> Iterator[RangeServer]:
    httpd = RangeServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(MULTI30K)))
    httpd.requests, httpd.honour_range = [], True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: RangeServer) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}/"


def _assert_identical(out: Path, names: list[str]) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no .part left behind
    for name in names:
        assert filecmp.cmp(out / name, MULTI30K / name, shallow=False), name


def test_file_url_downloads_and_verifies(tmp_path: Path) -> None:
    paths = download_multi30k(tmp_path, base_url=MULTI30K.as_uri() + "/", langs=("en",), progress=False)
    assert paths == [tmp_path / name for name in EN_FILES]
    _assert_identical(tmp_path, EN_FILES)


def test_file_url_resumes_a_partial_download(tmp_path: Path) -> None:
    (tmp_path / "val.en.gz.part").write_bytes((MULTI30K / "val.en.gz").read_bytes()[:5000])
    download_multi30k(tmp_path, base_url=MULTI30K.as_uri(), langs=("en",), progress=False)
    _assert_identical(tmp_path, EN_FILES)


def test_http_resumes_with_a_range_request(tmp_path: Path, server: RangeServer) -> None:
    (tmp_path / "train.en.gz.part").write_bytes((MULTI30K / "train.en.gz").read_bytes()[:100_000])
    download_multi30k(tmp_path, base_url=_url(server), langs=("en",), progress=True)
    assert ("/train.en.gz", "bytes=100000-") in server.requests
    assert ("/val.en.gz", None) in server.requests
    _assert_identical(tmp_path, EN_FILES)

    server.requests.clear()
    download_multi30k(tmp_path, base_url=_url(server), langs=("en",), progress=False)
    assert server.requests == []  # present and verified: nothing fetched


def test_http_starts_over_when_the_server_ignores_the_range(tmp_path: Path, server: RangeServer) -> None:
    server.honour_range = False
    (tmp_path / "val.en.gz.part").write_bytes(b"garbage that is not a prefix")
    download_multi30k(tmp_path, base_url=_url(server), langs=("en",), progress=False)
    assert ("/val.en.gz", "bytes=28-") in server.requests
    _assert_identical(tmp_path, EN_FILES)


def test_corrupt_download_is_deleted_and_raises(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in EN_FILES:
        (source / name).write_bytes((MULTI30K / name).read_bytes())
    data = bytearray((source / "val.en.gz").read_bytes())
    data[1000] ^= 0xFF  # same size, different sha256
    (source / "val.en.gz").write_bytes(bytes(data))

    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"val\.en\.gz.*sha256"):
        download_multi30k(out, base_url=source.as_uri(), langs=("en",), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["train.en.gz"]  # verified before; no .part kept

    (source / "val.en.gz").write_bytes(bytes(data[:-10]))
    with pytest.raises(DataError, match=r"val\.en\.gz.*bytes, expected"):
        download_multi30k(out, base_url=source.as_uri(), langs=("en",), progress=False)


def test_a_corrupt_existing_file_is_fetched_again(tmp_path: Path) -> None:
    (tmp_path / "val.en.gz").write_bytes(b"truncated")
    download_multi30k(tmp_path, base_url=MULTI30K.as_uri(), langs=("en",), progress=False)
    _assert_identical(tmp_path, EN_FILES)


def test_unreachable_url_raises_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"could not fetch http://127\.0\.0\.1:1/train\.en\.gz: ") as error:
        download_multi30k(tmp_path, base_url="http://127.0.0.1:1/", langs=("en",), progress=False)
    assert "\n" not in str(error.value)
    assert "--base-url takes a folder" in str(error.value)


def test_a_plain_folder_works_as_the_base_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(MULTI30K.parent)  # a relative folder, as a user types it
    paths = download_multi30k(tmp_path, base_url=MULTI30K.name, langs=("en",), progress=False)
    assert [p.name for p in paths] == EN_FILES
    _assert_identical(tmp_path, EN_FILES)


def test_missing_remote_file_raises(tmp_path: Path, server: RangeServer) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download_multi30k(tmp_path, base_url=_url(server) + "nowhere/", langs=("en",), progress=False)


def test_checksums_match_the_shared_copy() -> None:
    assert sorted(MULTI30K_FILES) == sorted(p.name for p in MULTI30K.glob("*.gz"))
    for name, (size, _) in MULTI30K_FILES.items():
        assert (MULTI30K / name).stat().st_size == size
