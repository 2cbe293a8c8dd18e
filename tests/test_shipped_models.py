"""The bundles shipped under models/: the default is there, every bundle is whole (its version
hash checks out), the folder stays small, and each one translates through the CLI."""

from __future__ import annotations

import shutil
import subprocess

from nmt.bundle import load_bundle
from nmt.engines import export
from nmt.translator import Translator
from tests.conftest import DEFAULT_BUNDLE as DEFAULT
from tests.conftest import ROOT, run_nmt
from tests.conftest import SHIPPED_MODELS as MODELS

MAX_BYTES = 80_000_000


def test_the_default_transformer_is_shipped():
    bundle = load_bundle(DEFAULT)
    assert bundle.model_config.arch == "transformer"
    assert (bundle.src_lang, bundle.tgt_lang) == ("en", "de")


def test_models_folder_stays_small():
    """What is committed under models/ (no bundle's exports: they are made where they are used,
    and ignored by git, see .gitignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "models"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    files = [ROOT / name for name in listed.split("\0") if name]
    assert DEFAULT / "bundle.json" in files
    total = sum(f.stat().st_size for f in files)
    assert total < MAX_BYTES, f"models/ holds {total / 1e6:.1f} MB"


def _shipped() -> list:
    bundles = sorted(p.parent for p in MODELS.glob("*/bundle.json"))
    assert DEFAULT in bundles
    return bundles


def test_every_shipped_bundle_translates():
    """Through the CLI, English to German (every shipped bundle translates it; a multilingual one
    needs the direction named, a bilingual one accepts it)."""
    for path in _shipped():
        load_bundle(path)  # raises if any file does not match the bundle's version
        text = "A man in a blue shirt is standing on a ladder.\nTwo dogs play in the snow.\n"
        args = ("--model", str(path), "--source", "en", "--target", "de")
        lines = run_nmt("translate", *args, stdin=text).stdout.splitlines()
        assert len(lines) == 2 and all(lines), lines


def test_every_shipped_bundle_exports_and_agrees_with_pytorch(tmp_path):
    """No export is committed (.gitignore: the service and the Docker image make them): exported
    here, into a copy, every bundle's ONNX Runtime translations, and a Transformer's CTranslate2
    ones, are PyTorch's."""
    texts = ["A man in a blue shirt is standing on a ladder.", "Two dogs play in the snow."]
    for path in _shipped():
        copy = shutil.copytree(path, tmp_path / path.name, ignore=shutil.ignore_patterns("onnx", "ct2"))
        bundle = load_bundle(copy)
        engines = ["onnx", "ctranslate2"] if bundle.model_config.arch == "transformer" else ["onnx"]
        expected = Translator.from_bundle(bundle).translate_best(texts, target="de")
        for engine in engines:
            export(bundle, engine)
            got = Translator.from_bundle(bundle, backend=engine).translate_best(texts, target="de")
            assert got == expected, (path.name, engine)
