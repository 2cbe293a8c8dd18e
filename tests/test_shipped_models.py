"""The bundles shipped under models/: the default is there, every bundle is whole (its version
hash checks out), the folder stays small, and each one translates through the CLI."""

from __future__ import annotations

import shutil
import subprocess

from nmt.bundle import load_bundle
from tests.conftest import DEFAULT_BUNDLE as DEFAULT
from tests.conftest import ROOT, run_nmt
from tests.conftest import SHIPPED_MODELS as MODELS

MAX_BYTES = 80_000_000


def test_the_default_transformer_is_shipped():
    bundle = load_bundle(DEFAULT)
    assert bundle.model_config.arch == "transformer"
    assert (bundle.src_lang, bundle.tgt_lang) == ("en", "de")


def test_models_folder_stays_small():
    """What is committed under models/ (the LSTM bundles' ONNX exports are made where they are
    used, and ignored by git, see .gitignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "models"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    files = [ROOT / name for name in listed.split("\0") if name]
    assert DEFAULT / "bundle.json" in files
    total = sum(f.stat().st_size for f in files)
    assert total < MAX_BYTES, f"models/ holds {total / 1e6:.1f} MB"


def test_every_shipped_bundle_translates():
    bundles = sorted(p.parent for p in MODELS.glob("*/bundle.json"))
    assert DEFAULT in bundles
    for path in bundles:
        load_bundle(path)  # raises if any file does not match the bundle's version
        text = "A man in a blue shirt is standing on a ladder.\nTwo dogs play in the snow.\n"
        lines = run_nmt("translate", "--model", str(path), stdin=text).stdout.splitlines()
        assert len(lines) == 2 and all(lines), lines


def test_every_shipped_lstm_exports_to_onnx_and_agrees_with_pytorch(tmp_path):
    """The LSTM bundles ship without exports (see .gitignore): exported here, into a copy, their
    ONNX Runtime translations are PyTorch's."""
    lstms = [p.parent for p in MODELS.glob("lstm*/bundle.json")]
    assert lstms, "no LSTM bundle is shipped"
    text = "A man in a blue shirt is standing on a ladder.\nTwo dogs play in the snow.\n"
    for path in lstms:
        copy = shutil.copytree(path, tmp_path / path.name, ignore=shutil.ignore_patterns("onnx"))
        run_nmt("export", "--model", str(copy), "--format", "onnx")
        expected = run_nmt("translate", "--model", str(copy), stdin=text).stdout
        assert run_nmt("translate", "--model", str(copy), "--backend", "onnx", stdin=text).stdout == expected


def test_the_shipped_exports_agree_with_pytorch():
    """The committed ONNX and CTranslate2 exports are current and translate as PyTorch does."""
    text = "A man in a blue shirt is standing on a ladder.\nTwo dogs play in the snow.\n"
    expected = run_nmt("translate", "--model", str(DEFAULT), stdin=text).stdout
    for backend in ("onnx", "ctranslate2"):
        assert (
            run_nmt("translate", "--model", str(DEFAULT), "--backend", backend, stdin=text).stdout == expected
        )
