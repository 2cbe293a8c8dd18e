"""Export a bundle to CTranslate2: the same weights, run by CTranslate2's own engine.

`export_ctranslate2(bundle)` writes BUNDLE/ct2/ (read by `nmt.backends.ctranslate2`):

    model.bin, config.json, *vocabulary.json   a CTranslate2 model directory, loadable as it is
                                               with ctranslate2.Translator(BUNDLE/ct2)
    export.json                                the bundle's version, the converter's versions
    vmap.txt                                   with a shortlist (`nmt.shortlist`): it as
                                               CTranslate2's vocabulary map, for `use_vmap`
                                               (export.json's "shortlist" is its digest);
                                               none for a multilingual shortlist (one table
                                               per target language, which a vmap cannot hold)

A bundle can be exported when its config lists "ctranslate2" in `export_formats` (CTranslate2
runs Transformers only); the model describes itself in CTranslate2's spec API
(`nmt.models.ctranslate2_spec`, with its weights); this module adds the vocabularies (the
SentencePiece pieces in id order), checks and saves the spec. Other bundles are refused with a
one-line error. The weights are stored in float32 (or int8 / float16 with `quantize`); CTranslate2
converts them to the compute type asked for when the model is loaded (`ctranslate2.Translator(...,
compute_type="int8")`, "float16" on a GPU), so one float32 export serves them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nmt.bundle import Bundle
from nmt.checkpoint import atomic_folder
from nmt.ct2_format import EXPORT_DIR, EXPORT_FILE, EXPORT_FORMAT
from nmt.errors import NmtError
from nmt.models import ctranslate2_spec
from nmt.shortlist import Shortlist, load_shortlist
from nmt.tokenizer import Tokenizer

VMAP_FILE = "vmap.txt"  # CTranslate2's name for it in a model folder

QUANTIZATIONS = ("int8", "float16")


class CTranslate2ExportError(NmtError):
    """The bundle cannot be expressed as a CTranslate2 model."""


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's pieces in id order."""
    processor = tokenizer.processor
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def export_ctranslate2(bundle: Bundle, quantize: str | None = None) -> Path:
    """Export the bundle's model into BUNDLE/ct2/, replacing an earlier export; returns it.

    quantize: None stores float32 weights, "int8" or "float16" those (a smaller file; CTranslate2
    then computes in that type where the device supports it, unless asked otherwise at load
    time). Written to a temporary folder beside it and renamed into place, as the ONNX export is."""
    import ctranslate2

    if quantize not in (None, *QUANTIZATIONS):
        raise CTranslate2ExportError(f"unknown quantization {quantize!r} (known: {', '.join(QUANTIZATIONS)})")
    cfg = bundle.model_config
    if "ctranslate2" not in cfg.export_formats:
        raise CTranslate2ExportError(
            f"{bundle.path}: --format ctranslate2 supports the Transformer only, "
            f"this bundle is {cfg.architecture!r} (use --format onnx)"
        )
    shortlist = load_shortlist(bundle)
    model = bundle.load_model("cpu")
    spec = ctranslate2_spec(model, cfg, vocabulary(bundle.src_tokenizer), vocabulary(bundle.tgt_tokenizer))
    spec.validate()
    spec.optimize(quantization=quantize or "float32")

    def fill(folder: Path) -> None:
        spec.save(str(folder))
        meta = {
            "format": EXPORT_FORMAT,
            "version": bundle.version,
            "model": type(model).__name__,
            "quantization": quantize,
            "exporter": {"torch": torch.__version__, "ctranslate2": ctranslate2.__version__},
        }
        (folder / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if shortlist is not None and shortlist.tables == 1:  # a multilingual one has no vmap
            write_vmap(folder, bundle, shortlist)

    return atomic_folder(bundle.path / EXPORT_DIR, fill)


def write_vmap(folder: Path, bundle: Bundle, shortlist: Shortlist) -> Path:
    """Write `shortlist` into the export `folder` as vmap.txt and record its digest in
    export.json (the backend refuses a vmap whose digest is not the bundle's shortlist's)."""
    pieces_src, pieces_tgt = vocabulary(bundle.src_tokenizer), vocabulary(bundle.tgt_tokenizer)
    text = "".join(line + "\n" for line in shortlist.vmap_lines(pieces_src, pieces_tgt))
    (folder / VMAP_FILE).write_text(text, encoding="utf-8")
    meta_file = folder / EXPORT_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["shortlist"] = shortlist.digest
    meta_file.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder / VMAP_FILE
