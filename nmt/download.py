"""Fetch the Multi30k corpus (task 1, raw text) and check every file against its known size and sha256.

Each file is downloaded to ``NAME.part`` and renamed to ``NAME`` only once it is verified, so a
file under its real name is always complete. An interrupted download resumes where it stopped:
over HTTP with a ``Range`` request, from a ``file://`` URL by seeking.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from tqdm import tqdm

from nmt.errors import ConfigError, DataError

MULTI30K_BASE_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_LANGS = ("en", "de", "fr")

# File name -> (size in bytes, sha256) of the public files.
MULTI30K_FILES: dict[str, tuple[int, str]] = {
    "train.en.gz": (568929, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    "train.de.gz": (637044, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    "train.fr.gz": (604242, "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c"),
    "val.en.gz": (21650, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    "val.de.gz": (24681, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    "val.fr.gz": (23001, "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9"),
    "test_2016_flickr.en.gz": (21077, "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    "test_2016_flickr.de.gz": (22890, "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    "test_2016_flickr.fr.gz": (22310, "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90"),
}

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60


def download_multi30k(
    out_dir: Path,
    base_url: str = MULTI30K_BASE_URL,
    langs: tuple[str, ...] | list[str] = MULTI30K_LANGS,
    progress: bool = True,
) -> list[Path]:
    """Download ``{split}.{lang}.gz`` for every split and language into `out_dir`; return their paths.
    `base_url` is an http(s):// or file:// URL, or a plain folder.

    Files already present and verified are skipped. Raises DataError naming the file or URL when a
    download fails or does not match its checksum.
    """
    unknown = [lang for lang in langs if lang not in MULTI30K_LANGS]
    if unknown:
        raise ConfigError(
            f"langs: Multi30k has no {', '.join(unknown)} (choose from {', '.join(MULTI30K_LANGS)})"
        )
    if not urlparse(base_url).scheme:  # a plain folder: the file:// URL of it
        base_url = Path(base_url).resolve().as_uri()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in MULTI30K_SPLITS:
        for lang in langs:
            name = f"{split}.{lang}.gz"
            size, sha256 = MULTI30K_FILES[name]
            url = base_url.rstrip("/") + "/" + name
            paths.append(_download_file(url, out_dir / name, size, sha256, progress))
    return paths


def _download_file(url: str, path: Path, size: int, sha256: str, progress: bool) -> Path:
    if path.is_file() and _mismatch(path, size, sha256) is None:
        return path
    part = path.with_name(path.name + ".part")
    if part.is_file() and part.stat().st_size > size:
        part.unlink()  # longer than the real file: not a prefix of it
    if not part.is_file() or part.stat().st_size < size:
        _fetch(url, part, size, progress)
    problem = _mismatch(part, size, sha256)
    if problem is not None:
        part.unlink()
        raise DataError(f"{path}: download from {url} is corrupt ({problem}); deleted it, run again")
    os.replace(part, path)
    return path


def _mismatch(path: Path, size: int, sha256: str) -> str | None:
    """Why `path` is not the expected file, or None when it is."""
    actual_size = path.stat().st_size
    if actual_size != size:
        return f"{actual_size:,} bytes, expected {size:,}"
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        return f"sha256 {digest.hexdigest()}, expected {sha256}"
    return None


def _fetch(url: str, part: Path, size: int, progress: bool) -> None:
    """Append the rest of `url` to `part` (or rewrite it when the source cannot resume)."""
    have = part.stat().st_size if part.is_file() else 0
    try:
        stream, start = _open(url, have)
        with (
            stream,
            part.open("ab" if start else "wb") as out,
            tqdm(
                total=size,
                initial=start,
                desc=part.name.removesuffix(".part"),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar,
        ):
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DataError(f"could not fetch {url}: {_reason(error)}") from None


def _open(url: str, offset: int) -> tuple[BinaryIO, int]:
    """A stream of `url` from byte `offset` when the source can resume, else from 0; and where it starts."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        stream = open(urllib.request.url2pathname(parsed.path), "rb")  # noqa: SIM115 (returned open)
        stream.seek(offset)
        return stream, offset
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    if offset and response.status == 206:  # Partial Content: the server honoured the range
        return response, offset
    return response, 0  # 200: the server ignored the range and sends the whole file


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):  # no answer at all: say how to work offline
        return f"{error.reason} (offline? --base-url takes a folder or URL that holds the files)"
    return str(error) or type(error).__name__
