"""NMT_BACKEND=auto in a real `nmt serve`: each bundle on the engine its speed record names (or the
fallback without one), said by /v1/models and the log; a CTranslate2-served bundle still answers
HTML, glossary and alignment requests (on ONNX Runtime, loaded when first needed); engines that
cannot run a bundle stop the start in one line naming it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nmt.bundle import BUNDLE_FILE, load_bundle
from nmt.engines import record_speed, speed_entry
from tests.conftest import DEFAULT_BUNDLE, assert_one_line_error, run_nmt
from tests.serving.conftest import Server, start_server, stop_server

SHIPPED = DEFAULT_BUNDLE.name  # transformer-en-de: it exports to CTranslate2 and attends


def _record(path: Path, speeds: dict[str, float]) -> None:
    bundle = load_bundle(path)
    record_speed(bundle, speed_entry(bundle, speeds, "cpu", 1, {"sentences": 3}))


@pytest.fixture(scope="module")
def models(trained_bundles, tmp_path_factory) -> Path:
    """The shipped Transformer, recorded fastest on CTranslate2; a tiny Transformer recorded
    fastest on PyTorch; the tiny attention LSTM without a record. Copies: the service writes
    the exports it lacks."""
    folder = tmp_path_factory.mktemp("auto-models")
    shutil.copytree(DEFAULT_BUNDLE, folder / SHIPPED, ignore=shutil.ignore_patterns("ct2"))
    _record(folder / SHIPPED, {"torch": 5.0, "onnx": 8.0, "ctranslate2": 12.0})
    torch_one = Path(shutil.copytree(trained_bundles["transformer"], folder / "tiny-torch"))
    meta = json.loads((torch_one / BUNDLE_FILE).read_text())
    (torch_one / BUNDLE_FILE).write_text(json.dumps({**meta, "name": "tiny-torch"}))  # not hashed
    _record(torch_one, {"torch": 30.0, "onnx": 20.0, "ctranslate2": 10.0})
    shutil.copytree(trained_bundles["lstm_attention"], folder / "tiny-lstm_attention")
    return folder


@pytest.fixture(scope="module")
def server(models, tmp_path_factory) -> Iterator[Server]:
    server = start_server(models, tmp_path_factory.mktemp("auto-serve"))  # NMT_BACKEND unset: auto
    yield server
    stop_server(server)


def translate(server: Server, text: str, **fields) -> dict:
    body = {"text": text, "source": "en", "target": "de", "model": SHIPPED, **fields}
    with server.client() as client:
        reply = client.post("/v1/translate", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["translations"][0]


def test_models_says_which_engine_serves_each_bundle_and_why(server, models):
    with server.client() as client:
        served = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    shipped, tiny, lstm = served[SHIPPED], served["tiny-torch"], served["tiny-lstm_attention"]
    assert shipped["backend"] == "ctranslate2" and "fastest" in shipped["backend_reason"]
    assert shipped["speed"]["sentences_per_s"] == {"torch": 5.0, "onnx": 8.0, "ctranslate2": 12.0}
    assert shipped["alignment"] is True and shipped["alignment_backend"] == "onnx"
    assert (models / SHIPPED / "ct2" / "export.json").is_file()  # made at start-up
    assert tiny["backend"] == "torch" and tiny["speed"]["sentences_per_s"]["torch"] == 30.0
    assert lstm["backend"] == "onnx" and lstm["speed"] is None  # the fallback
    assert "no speed record" in lstm["backend_reason"]
    log = server.log.read_text()
    assert "transformer-en-de: served on ctranslate2 (fastest" in log
    assert "tiny-lstm_attention: no speed record for this device" in log and "nmt bench" in log


def test_a_ctranslate2_bundle_serves_html_glossaries_and_alignments(server):
    plain = translate(server, "A dog runs to the man.")
    assert plain["text"] and 0 < plain["confidence"] <= 1
    assert "loading it on onnx" not in server.log.read_text()  # no alignments asked for yet
    forced = translate(
        server, "A dog runs to the man.", glossary={"dog": "Vierbeiner"}, do_not_translate=["man"]
    )
    assert "Vierbeiner" in forced["text"] and "man" in forced["text"], forced
    html = translate(server, "<p>A man in a <b>red</b> shirt rides a bike.</p>", format="html")
    assert html["text"].startswith("<p>") and "<b>" in html["text"] and html["text"].endswith("</p>")
    aligned = translate(server, "Two dogs play in the snow.", return_alignment=True)
    assert aligned["alignment"] and len({t for _, t in aligned["alignment"]}) <= len(aligned["text"].split())
    numbers = translate(server, "A man sells 25 apples at www.example.com.")
    assert "25" in numbers["text"] and "www.example.com" in numbers["text"], numbers
    assert "transformer-en-de: alignments asked for; loading it on onnx" in server.log.read_text()


def test_an_engine_that_cannot_run_a_bundle_stops_the_start_naming_it(models, tmp_path):
    result = run_nmt("serve", "--models", str(models), check=False, NMT_BACKEND="ctranslate2")
    assert_one_line_error(result, "NMT_BACKEND=ctranslate2", "tiny-lstm_attention", "Transformers only")
    if torch.cuda.is_available():
        return  # the next case needs a machine without CUDA
    result = run_nmt("serve", "--models", str(models), check=False, NMT_DEVICE="cuda")
    assert_one_line_error(result, "NMT_BACKEND=auto", "no engine can run it on cuda", "torch: no CUDA device")
