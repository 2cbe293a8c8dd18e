"""What every benchmark script shares: recipe and corpus arguments, a table, the verdict line.

Benchmarks here compare contenders *in one process, interleaved* (A B, B A, A B, ...) and judge
ratios, never absolute speeds: the machine they run on is shared (a training job may be using
every core), so an absolute number says more about the neighbours than about the code.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import torch

from nmt.config import Recipe, load_recipe

DEFAULT_CONFIG = "training/configs/transformer-en-de.yaml"
TEST_SPLIT = "test_2016_flickr"  # the test set every speed and BLEU target is measured on
ROOT = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    """Where Multi30k is: $NMT_MULTI30K, else data/multi30k (`nmt data download`), else the shared
    copy beside the checkout (where CI puts it)."""
    if os.environ.get("NMT_MULTI30K"):
        return Path(os.environ["NMT_MULTI30K"])
    for folder in (ROOT / "data" / "multi30k", ROOT.parent / "shared" / "data" / "multi30k"):
        if (folder / "test_2016_flickr.en.gz").is_file():
            return folder
    return ROOT / "data" / "multi30k"


DEFAULT_DATA = default_data()


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --data and --threads."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="recipe YAML (default: %(default)s)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, as `nmt train --set` does (repeatable)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with {train,val,test_2016_flickr}.{src,tgt}[.gz] (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads, 0 = torch's default, one per core (default: %(default)s; see `set_threads`)",
    )


def add_direction_arguments(parser: argparse.ArgumentParser) -> None:
    """--source and --target: one direction of a bundle (a multilingual bundle's needs both)."""
    parser.add_argument("--source", help="the direction's source language (needed for a multilingual bundle)")
    parser.add_argument("--target", help="the direction's target language (likewise)")


def set_threads(threads: int) -> None:
    """Use `threads` torch threads (0: leave torch's default, one per core, as users run).

    Both contenders of a benchmark always run with the same threads. On a machine shared with
    a training job pass `--threads 1`: two processes whose OpenMP threads spin-wait for each
    other on the same cores slow each other down several times over (seen on a 2-core box
    beside a 2-thread training job: 8.4 s per training step with 2 threads, 1.3 s with 1).
    """
    if threads > 0:
        torch.set_num_threads(threads)


def corpus_file(data: Path, split: str, lang: str) -> Path:
    """data/split.lang.gz, or the plain file when only that exists."""
    gz = data / f"{split}.{lang}.gz"
    plain = data / f"{split}.{lang}"
    return plain if plain.is_file() and not gz.is_file() else gz


def load_benchmark_recipe(args: argparse.Namespace, extra: Sequence[str] = ()) -> Recipe:
    """The recipe with its corpora taken from --data, then `extra`, then the user's --set (which win)."""
    langs = load_recipe(args.config, args.overrides).data
    data = [
        f"data.{section}.{side}={corpus_file(args.data, split, lang)}"
        for section, split in (("train", "train"), ("valid", "val"))
        for side, lang in (("src", langs.src_lang), ("tgt", langs.tgt_lang))
    ]
    return load_recipe(args.config, [*data, *extra, *args.overrides])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain left-aligned text table; floats are printed as given (format them first)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


def verdict(description: str, passed: bool) -> None:
    print(f"target: {description} -> {'PASS' if passed else 'FAIL'}")


def start_service(models: Path, log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`nmt serve --models MODELS` on a free loopback port, `env` added to its environment, its
    output in `log`: (the process, its URL) once /ready answers 200; SystemExit otherwise."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "nmt", "serve", "--models", str(models), "--port", str(port)]
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"nmt serve exited {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"nmt serve did not get ready:\n{log.read_text()[-2000:]}")
