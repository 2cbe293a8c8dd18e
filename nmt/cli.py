"""The `nmt` command: thin argument parsing over the library.

    nmt train --config RECIPE.yaml [--resume] [--set KEY=VALUE ...]
    nmt average (--checkpoints CKPT ... | --run DIR --last N) --out BUNDLE
    nmt translate --model BUNDLE [--beam-size 5] [--batch-size N] [--device cpu|cuda] [--alignments]
                                                                                     (stdin -> stdout)
    nmt evaluate --model BUNDLE --src FILE --ref FILE [--json] [--record TEST_SET]
    nmt calibrate --model BUNDLE --src FILE --ref FILE         (the confidence map, into bundle.json)
    nmt attention --model BUNDLE --text TEXT --out FILE.png                  (the attention heatmap)
        all three take [--backend torch|onnx|ctranslate2|auto]; onnx and ctranslate2 run the export
        `nmt export` made, auto the engine the bundle's speed record names (see nmt/engines.py);
        and [--source LANG --target LANG], needed where the bundle translates several directions
        and [--shortlist]: decode over the bundle's vocabulary shortlist (nmt shortlist)
    nmt bench --model BUNDLE --src FILE [--lines 200] [--threads N] [--engines E ...] [--record]
        (sentences/s of each engine that can run it here, beam 5, batch 32; --record: into bundle.json)
    nmt export --model BUNDLE --format onnx [--quantize int8|float16]               (-> BUNDLE/onnx/)
    nmt export --model BUNDLE --format ctranslate2 [--quantize int8|float16] (Transformer -> BUNDLE/ct2/)
    nmt shortlist --model BUNDLE --src FILE --tgt FILE [--k 30] [--frequent 100] [--outside 0] [--score dice] [--copies]
                                               (-> BUNDLE/shortlist.npz, and BUNDLE/ct2/vmap.txt)
        a multilingual bundle: [--direction en-de --src FILE --tgt FILE] for each corpus
    nmt compare [--models BUNDLE...] [--hyps NAME=FILE...] --src FILE --ref FILE [--baseline NAME]
        [--length-buckets 10,15,20,30] [--out DIR]
    nmt data download multi30k --out DIR [--base-url URL|FOLDER]
    nmt data prepare --config RECIPE.yaml [--set KEY=VALUE ...] [--workers N]   (tokenize once, memmap)
    nmt serve [--models DIR] [--host H] [--port P] [--workers N]         (settings: NMT_* variables)

Every user mistake ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import NmtError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _device(value: str) -> str:
    import torch

    if value == "cuda" and not torch.cuda.is_available():
        raise NmtError("--device cuda: no CUDA device is available here")
    return value


def _search_options(args, defaults):
    """The bundle's search options with the ones given on the command line."""
    return defaults.with_overrides(
        beam_size=args.beam_size,
        n_best=getattr(args, "n_best", None),  # only `translate` has --n-best
        length_penalty=args.length_penalty,
    )


def _direction(bundle, args):
    """The bundle's direction that --source/--target name (needed where it has several)."""
    try:
        return bundle.direction(args.source, args.target)
    except NmtError as error:
        flags = "--source/--target" if args.source is None or args.target is None else "--source --target"
        raise NmtError(f"{flags}: {error}") from None


def _translator(args):
    """(translator, search options, direction) for the decoding commands."""
    import torch

    from nmt.bundle import load_bundle
    from nmt.translator import Translator

    if args.workers < 1:
        raise NmtError(f"--workers must be at least 1, not {args.workers}")
    bundle = load_bundle(args.model)
    direction = _direction(bundle, args)
    if args.workers > 1:  # the threads shared out among the workers
        torch.set_num_threads(max(1, torch.get_num_threads() // args.workers))
    translator = Translator.from_bundle(
        bundle,
        _device(args.device),
        args.backend,
        batch_size=args.batch_size,
        shortlist=args.shortlist,
        workers=args.workers,
    )
    return translator, _search_options(args, bundle.search), direction


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cmd_translate(args) -> None:
    from nmt.alignment import pharaoh
    from nmt.errors import NoAttention
    from nmt.translator import Translation

    translator, search, direction = _translator(args)
    if args.alignments and not translator.attends:
        raise NoAttention(f"--alignments: {translator.no_attention}")
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(encoding="utf-8")
    out = sys.stdout
    # chunks keep memory bounded on long inputs while each chunk still batches well
    for chunk in _chunks(sys.stdin, max(args.batch_size * 32, 1024)):
        for nbest in translator.translate(chunk, search, args.alignments, direction.target):
            # n lines for every input, always: an empty line (or a search that finished fewer
            # hypotheses) is padded with empty translations scored -inf
            missing = search.n_best - len(nbest)
            for t in [*nbest, *[Translation("", -math.inf, -math.inf)] * missing]:
                fields = [t.text] if search.n_best == 1 else [t.text, f"{t.score:.4f}"]
                if args.alignments:
                    fields.append(pharaoh(t.alignment or []))
                out.write("\t".join(fields) + "\n")
        out.flush()


def cmd_distill(args) -> None:
    from nmt.bundle import load_bundle
    from nmt.distill import sidecar, write_targets

    translator, search, direction = _translator(args)
    src, out = Path(args.src), Path(args.out)
    if not src.is_file():
        raise NmtError(f"--src: {src} is not a file")
    lines = write_targets(translator, load_bundle(args.model), src, out, search, direction)
    print(f"{lines:,} translations in {out}, described in {sidecar(out)}")


def cmd_attention(args) -> None:
    from nmt.errors import NoAttention
    from nmt.heatmap import draw_attention

    translator, search, direction = _translator(args)
    if not translator.attends:
        raise NoAttention(translator.no_attention)
    if not args.text.strip():
        raise NmtError("--text: give a sentence to translate")
    one = search.with_overrides(n_best=1)
    best = translator.translate([args.text], one, alignments=True, target=direction.target)[0][0]
    if best.attention is None or not best.attention.src_pieces:
        raise NmtError("--text: the sentence has no tokens to draw")
    draw_attention(best.attention, best.alignment or [], Path(args.out), f"{args.text}\n{best.text}")
    print(best.text)
    print(args.out)


def cmd_evaluate(args) -> None:
    from nmt.data import read_lines
    from nmt.metrics import corpus_scores

    src, ref = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(ref):
        raise NmtError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    translator, search, direction = _translator(args)
    hypotheses = translator.translate_best(src, search, direction.target)
    if args.hyp_out:
        Path(args.hyp_out).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = corpus_scores(hypotheses, ref)
    lowercase = corpus_scores(hypotheses, ref, lowercase=True)
    measured = {
        "src": str(args.src),
        "direction": str(direction),
        "sentences": len(src),
        **scores.as_dict(),
        "lowercase": lowercase.as_dict(),
    }
    if args.record:
        from nmt.bundle import record_scores

        record_scores(Path(args.model), args.record, measured, direction)
    if args.json:
        print(json.dumps({"model": str(args.model), **measured}, indent=2))
    else:
        print(scores)
        print(f"lowercased: BLEU {lowercase.bleu:.2f}  ({lowercase.signatures['bleu']})")


def cmd_calibrate(args) -> None:
    from nmt.confidence import calibrate
    from nmt.data import read_lines

    src, ref = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(ref):
        raise NmtError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    translator, search, direction = _translator(args)
    fitted, auc = calibrate(Path(args.model), src, ref, translator, search, str(args.src), direction.target)
    good = (fitted.fitted_on or {}).get("good")
    print(
        f"{args.model}: confidence calibrated on {len(src)} sentences ({good} good); "
        f"ROC AUC good vs bad {auc:.3f}"
    )


def _named_files(specs: list[str]) -> list[tuple[str, Path]]:
    """['ours=out.de', ...] -> [('ours', Path('out.de')), ...]"""
    named = []
    for spec in specs:
        name, equals, file = spec.partition("=")
        if not (equals and name and file):
            raise NmtError(f"--hyps {spec}: expected NAME=FILE, e.g. fairseq=hyps.de")
        named.append((name, Path(file)))
    return named


def cmd_compare(args) -> None:
    from nmt.compare import LENGTH_EDGES, compare, parse_length_edges

    edges = LENGTH_EDGES if args.length_buckets is None else parse_length_edges(args.length_buckets)
    found = compare(
        [Path(p) for p in args.models],
        Path(args.src),
        Path(args.ref),
        args.baseline,
        Path(args.out) if args.out else None,
        _device(args.device),
        args.batch_size,
        args.beam_size,
        args.samples,
        hyps=_named_files(args.hyps),
        length_edges=edges,
        source=args.source,
        target=args.target,
    )
    reports = found.get("directions", {"": found})
    for direction, report in reports.items():
        if direction:
            print(f"## {direction}\n")
        print(report["table"])
        for name, signature in report["signatures"].items():
            print(f"{name}: {signature}")
        print(f"\nBLEU by {report['length_buckets']['unit']}:")
        print(report["length_table"])
        if args.out:
            out = Path(args.out, direction) if direction else Path(args.out)
            print(f"report: {out}/compare.md, compare.json, compare.png\n")


def cmd_train(args) -> None:
    from nmt.config import load_recipe
    from nmt.train import train

    recipe = load_recipe(args.config, args.set or [])
    print(train(recipe, resume=args.resume))


def cmd_average(args) -> None:
    from nmt.checkpoint import average_state_dicts, epoch_end_checkpoints, load_checkpoint, step_checkpoints
    from nmt.config import parse_recipe
    from nmt.run import RunDir

    if args.run:
        folder = RunDir(args.run).checkpoints
        kind = "step-*.pt" if args.any_step else "epoch-end"
        paths = (step_checkpoints(folder) if args.any_step else epoch_end_checkpoints(folder))[-args.last :]
        if not paths:
            raise NmtError(f"{args.run}: no {kind} checkpoints to average")
        print(
            f"averaging {len(paths)} {kind} checkpoints: {' '.join(p.name for p in paths)}", file=sys.stderr
        )
    else:
        paths = [Path(p) for p in args.checkpoints]
    recipe = parse_recipe(load_checkpoint(paths[-1])["recipe"], str(paths[-1]))
    run = RunDir(args.run or paths[-1].parent.parent)
    meta: dict = {"training": {"recipe": recipe.name, "averaged": [p.name for p in paths]}}
    if recipe.train.init_from is not None:
        meta["training"]["init_from"] = str(recipe.train.init_from)
    if recipe.distill is not None:
        from nmt.distill import check_targets

        meta["distilled"] = check_targets(recipe)  # the teacher and its output, checked again
    print(run.write_bundle(average_state_dicts(paths), recipe, meta, Path(args.out), dtype=args.dtype))


def cmd_bench(args) -> None:
    import torch

    from nmt.bundle import load_bundle
    from nmt.data import read_lines
    from nmt.engines import ENGINES, available, measure_speeds, record_speed, speed_entry, unavailable

    bundle = load_bundle(args.model)
    direction = _direction(bundle, args)
    device = _device(args.device)
    if args.engines:
        for engine in args.engines:
            reason = unavailable(bundle, engine, device)
            if reason is not None:
                raise NmtError(f"--engines {engine}: it cannot run {bundle.name} here: {reason}")
        engines = list(dict.fromkeys(args.engines))
    else:
        engines = available(bundle, device)
    for name, value in (("--lines", args.lines), ("--threads", args.threads), ("--rounds", args.rounds)):
        if value is not None and value < 1:
            raise NmtError(f"{name} must be at least 1, not {value}")
    texts = [line for line in read_lines(args.src) if line.strip()][: args.lines]
    if not texts:
        raise NmtError(f"--src {args.src}: no sentences in it")
    threads = args.threads or torch.get_num_threads()
    speeds = measure_speeds(
        bundle,
        texts,
        engines,
        device,
        threads,
        args.beam_size,
        args.batch_size,
        args.rounds,
        direction.target,
    )
    sample = {
        "src": Path(args.src).name,
        "direction": str(direction),
        "sentences": len(texts),
        "beam_size": args.beam_size,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
    }
    entry = speed_entry(bundle, speeds, device, threads, sample)
    fastest = max(speeds, key=lambda e: speeds[e])
    print(
        f"{bundle.name} ({bundle.version}) on {entry['device']}, {threads} threads, {len(texts)} sentences, "
        f"beam {args.beam_size}, batch {args.batch_size}"
    )
    for engine in sorted(speeds, key=lambda e: -speeds[e]):
        print(
            f"  {engine:12s} {speeds[engine]:8.2f} sentences/s  {speeds[engine] / speeds[fastest]:.2f}x the fastest"
        )
    skipped = [e for e in ENGINES if e not in speeds]
    for engine in skipped:
        print(f"  {engine:12s} not measured: {unavailable(bundle, engine, device) or 'not asked for'}")
    if args.record:
        record_speed(bundle, entry)
        print(f'recorded in {bundle.path / "bundle.json"} under "speed"')


def cmd_export(args) -> None:
    from nmt.bundle import load_bundle

    bundle = load_bundle(args.model)
    if args.format == "ctranslate2":
        from nmt.export.ctranslate2 import export_ctranslate2

        print(export_ctranslate2(bundle, args.quantize))
    else:
        from nmt.export.onnx import export_onnx

        print(export_onnx(bundle, args.quantize))


def cmd_shortlist(args) -> None:
    from nmt.bundle import bundle_file, load_bundle
    from nmt.ct2_format import EXPORT_DIR, EXPORT_FILE
    from nmt.shortlist import save_shortlist, shortlist_for_bundle, shortlist_path

    bundle = load_bundle(args.model)
    if not len(args.src) == len(args.tgt) == (len(args.direction) if args.direction else 1):
        raise NmtError(
            "give one --src and one --tgt (and for a multilingual bundle one --direction) per corpus"
        )
    directions = [bundle.direction(*d.split("-", 1)) for d in args.direction] or [bundle.direction()]
    corpora = {d: (Path(src), Path(tgt)) for d, src, tgt in zip(directions, args.src, args.tgt, strict=True)}
    shortlist = shortlist_for_bundle(
        bundle, corpora, args.k, args.frequent, args.outside, args.score, args.copies
    )
    path = save_shortlist(shortlist, shortlist_path(bundle))
    print(path)
    ct2 = bundle_file(bundle.path, EXPORT_DIR, "ct2 export")
    if (ct2 / EXPORT_FILE).is_file() and shortlist.tables == 1:  # its vmap follows the new table
        from nmt.export.ctranslate2 import write_vmap
        from nmt.shortlist import require_shortlist

        print(write_vmap(ct2, bundle, require_shortlist(bundle)))  # as read back: with its digest


def cmd_download(args) -> None:
    from nmt.download import MULTI30K_BASE_URL, download_multi30k

    for path in download_multi30k(Path(args.out), args.base_url or MULTI30K_BASE_URL, tuple(args.langs)):
        print(path)


def cmd_prepare(args) -> None:
    from nmt.config import load_recipe
    from nmt.dataset import ensure_prepared, read_manifest, report_lines
    from nmt.run import RunDir

    recipe = load_recipe(args.config, args.set or [])
    run = RunDir(recipe.train.out_dir)
    folder = run.prepared(recipe)
    given = run.given_tokenizers(recipe)  # a run that has begun keeps its tokenizer
    ensure_prepared(recipe, folder, given, recipe.data.prepared is not None, args.workers)
    manifest = read_manifest(folder)
    assert manifest is not None  # ensure_prepared wrote it
    for line in report_lines(manifest):
        print(line)
    print(folder)


def _add_decoding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model bundle folder")
    parser.add_argument(
        "--beam-size", type=int, help="beam size (default: the bundle's, usually 5; 1 = greedy)"
    )
    parser.add_argument(
        "--length-penalty", type=float, help="GNMT length penalty alpha (default: the bundle's)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="batches decoded at once, the threads shared out among them (default 1: one batch at a "
        "time on all threads); on a CPU, one worker per core is the faster way to translate a file "
        "(docs/decode.md)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx", "ctranslate2", "auto"],
        default="torch",
        help="run the model with PyTorch, or on its export (made by nmt export): ONNX Runtime, or "
        "CTranslate2 (Transformers only); auto: the fastest in the bundle's speed record for this "
        "device (nmt bench --record), its export made where missing",
    )
    parser.add_argument(
        "--shortlist",
        action="store_true",
        help="decode over the bundle's vocabulary shortlist (shortlist.npz, made by nmt shortlist)",
    )
    parser.add_argument(
        "--source", metavar="LANG", help="source language (needed where the bundle has several directions)"
    )
    parser.add_argument(
        "--target", metavar="LANG", help="target language (needed where the bundle has several directions)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmt", description="Train and run neural machine translation models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser(
        "train", help="train a model from a YAML recipe", description="Train a model from a YAML recipe."
    )
    p.add_argument("--config", required=True, help="recipe file (see training/configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in the recipe's out_dir")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe key, e.g. train.max_steps=100"
    )
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser(
        "average",
        help="average checkpoints into a bundle",
        description="Average the weights of checkpoints into a bundle.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoints", nargs="+", help="checkpoint files of one run")
    source.add_argument("--run", help="a training run folder (its out_dir)")
    p.add_argument(
        "--last",
        type=int,
        default=5,
        help="with --run: how many of the last epoch-end checkpoints (default 5)",
    )
    p.add_argument(
        "--any-step",
        action="store_true",
        help="with --run: count mid-epoch and interrupt checkpoints too, not only those of epoch ends",
    )
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="stored weights (float16: half the size)",
    )
    p.set_defaults(handler=cmd_average)

    p = commands.add_parser(
        "translate",
        help="translate stdin to stdout",
        description="Translate lines from stdin to stdout, one per line, in order.",
    )
    _add_decoding(p)
    p.add_argument("--n-best", type=int, help="write N translations per line as TEXT<TAB>SCORE")
    p.add_argument(
        "--alignments",
        action="store_true",
        help="append a tab and the word alignment in Pharaoh format (0-0 1-2 ...: source word - "
        "target word, words split at spaces) to each line; models with attention only",
    )
    p.set_defaults(handler=cmd_translate)

    p = commands.add_parser(
        "distill",
        help="translate training sources with a teacher, for a distilled student",
        description="Write a teacher bundle's translations of a training source file, with a "
        "description beside them (OUT.teacher.json) that a recipe's `distill: {teacher: ...}` checks: "
        "sequence-level knowledge distillation (Kim & Rush 2016).",
    )
    _add_decoding(p)
    p.add_argument("--src", required=True, help="training source file (plain or .gz), one sentence a line")
    p.add_argument("--out", required=True, help="file to write the teacher's translations to")
    p.set_defaults(handler=cmd_distill)

    p = commands.add_parser(
        "calibrate",
        help="fit a bundle's confidence calibration on a held-out set",
        description="Translate a held-out set, score each sentence with chrF against its reference and "
        "fit the map from the model's scores to a confidence in [0, 1] (stored in bundle.json; the "
        "version stays the same).",
    )
    _add_decoding(p)
    p.add_argument("--src", required=True, help="source sentences, one per line (.gz allowed)")
    p.add_argument("--ref", required=True, help="their reference translations")
    p.set_defaults(handler=cmd_calibrate)

    p = commands.add_parser(
        "attention",
        help="draw a translation's attention as a heatmap",
        description="Translate one sentence and draw its attention (target pieces over source "
        "pieces, word alignment as dots) into an image; models with attention only.",
    )
    _add_decoding(p)
    p.add_argument("--text", required=True, help="the sentence to translate")
    p.add_argument("--out", required=True, help="image file to write (.png, .svg or .pdf)")
    p.set_defaults(handler=cmd_attention)

    p = commands.add_parser(
        "evaluate",
        help="BLEU, chrF and TER on a test set",
        description="Translate a test set and score it with sacreBLEU.",
    )
    _add_decoding(p)
    p.add_argument("--src", required=True, help="source file (plain or .gz)")
    p.add_argument("--ref", required=True, help="reference file (plain or .gz)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--hyp-out", help="also write the translations to this file")
    p.add_argument(
        "--record",
        metavar="TEST_SET",
        help="store the scores in the bundle's bundle.json under this name (the service's /v1/models shows them)",
    )
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser(
        "compare",
        help="A/B compare models by BLEU, chrF, TER",
        description="Score models, or translations made elsewhere, on one test set with 95%% confidence "
        "intervals, paired bootstrap significance and BLEU by source length.",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=[],
        help="bundle folders (the first system, of these or --hyps, is the baseline)",
    )
    p.add_argument(
        "--hyps",
        nargs="+",
        default=[],
        metavar="NAME=FILE",
        help="translations of --src made elsewhere, one line per source line (plain or .gz); "
        "scored after the --models",
    )
    p.add_argument(
        "--src",
        required=True,
        help="source file (plain or .gz); with {src} and {tgt} in the name (test.{src}.gz), every "
        "direction the models share is compared on its own files",
    )
    p.add_argument("--ref", required=True, help="reference file (plain or .gz; {src} and {tgt} as --src)")
    p.add_argument(
        "--source", metavar="LANG", help="compare on the direction from LANG (default: all shared)"
    )
    p.add_argument("--target", metavar="LANG", help="compare on the direction into LANG")
    p.add_argument("--baseline", help="name (or folder, or --hyps file) of the baseline (default: the first)")
    p.add_argument("--out", help="folder for compare.md, compare.json and compare.png")
    p.add_argument("--beam-size", type=int, help="beam size for every model (default: each bundle's)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument(
        "--length-buckets",
        metavar="EDGES",
        help="upper edges of the source-length buckets in words, split on whitespace "
        "(default 10,12,15,20: 1-10, 11-12, 13-15, 16-20, 21+)",
    )
    p.set_defaults(handler=cmd_compare)

    p = commands.add_parser(
        "bench",
        help="measure each engine's decoding speed on a bundle",
        description="Decode a sample with each engine that can run the bundle here (PyTorch, ONNX "
        "Runtime, CTranslate2), in alternating order, and print sentences/s; --record stores them in "
        "the bundle's bundle.json, where the service's NMT_BACKEND=auto reads them. Exports the bundle "
        "lacks (or has of another version) are written into it first, as the service does.",
    )
    p.add_argument("--model", required=True, help="model bundle folder")
    p.add_argument(
        "--src", required=True, help="source sentences (plain or .gz), e.g. test_2016_flickr.en.gz"
    )
    p.add_argument("--lines", type=int, default=200, help="its first N lines are the sample (default 200)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: PyTorch's count)")
    p.add_argument("--beam-size", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per engine, median kept (default 3)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--engines", nargs="+", choices=["torch", "onnx", "ctranslate2"], help="default: all that can run it"
    )
    p.add_argument("--record", action="store_true", help="store the speeds in the bundle's bundle.json")
    p.add_argument(
        "--source",
        metavar="LANG",
        help="the sample's language (needed where the bundle has several directions)",
    )
    p.add_argument("--target", metavar="LANG", help="the language to translate it into (likewise)")
    p.set_defaults(handler=cmd_bench)

    p = commands.add_parser(
        "export",
        help="export a bundle for another runtime",
        description="Export a bundle for another runtime, into the bundle folder: its encoder and "
        "decoder-step graphs to ONNX (BUNDLE/onnx/, any architecture), or a Transformer to a "
        "CTranslate2 model (BUNDLE/ct2/).",
    )
    p.add_argument("--model", required=True, help="model bundle folder")
    p.add_argument("--format", required=True, choices=["onnx", "ctranslate2"])
    p.add_argument(
        "--quantize",
        choices=["int8", "float16"],
        help="int8 weights (onnx: dynamic quantization; ctranslate2: int8 storage, which "
        "CTranslate2 also offers at load time for a float32 export), or float16 (for GPUs)",
    )
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser(
        "shortlist",
        help="build the bundle's vocabulary shortlist from a parallel corpus",
        description="Build BUNDLE/shortlist.npz: for each source token its K best target tokens by "
        "co-occurrence (Dice) or IBM model 1's p(target | source) in the corpus, plus the N most "
        "frequent target tokens; decoding with "
        "--shortlist then computes the output layer over those only. Also writes BUNDLE/ct2/vmap.txt "
        "when the bundle has a CTranslate2 export.",
    )
    p.add_argument("--model", required=True, help="model bundle folder")
    p.add_argument(
        "--src", required=True, action="append", help="source side of the training corpus (plain or .gz)"
    )
    p.add_argument("--tgt", required=True, action="append", help="its target side, line by line")
    p.add_argument(
        "--direction",
        action="append",
        default=[],
        help="a multilingual bundle: the direction (en-de) of each --src/--tgt pair, in the same order; "
        "one table per target language is built from the corpora into it",
    )
    # the defaults are nmt.shortlist's DEFAULT_K, DEFAULT_FREQUENT, DEFAULT_OUTSIDE (not imported: it loads torch)
    p.add_argument("--k", type=int, default=30, help="target tokens per source token (default 30)")
    p.add_argument("--frequent", type=int, default=100, help="most frequent target tokens kept (default 100)")
    p.add_argument(
        "--outside",
        type=int,
        default=0,
        help="ids outside a batch's shortlist sampled to estimate the rest of the softmax normaliser "
        "(default 0: normalise over the shortlist alone; PyTorch and ONNX Runtime, not CTranslate2's vmap)",
    )
    p.add_argument(
        "--score",
        choices=["dice", "ibm1"],
        default="dice",
        help="how each source token's candidates rank: dice, the Dice coefficient of sentence "
        "co-occurrence (default, one pass); ibm1, IBM model 1's p(target | source) after 5 rounds of "
        "EM (six passes over the corpus; a sharper table: as few missing tokens with fewer ids)",
    )
    p.add_argument(
        "--copies",
        action="store_true",
        help="a bundle whose two sides share one vocabulary: each source token's row also lists the "
        "token itself (names, numbers and shared words can be copied through)",
    )
    p.set_defaults(handler=cmd_shortlist)

    data = commands.add_parser("data", help="data sets", description="Fetch and prepare data sets.")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    p = data_commands.add_parser(
        "download",
        help="download a public corpus",
        description="Download Multi30k (task 1, raw) with checksum checks and resume.",
    )
    p.add_argument("corpus", choices=["multi30k"])
    p.add_argument("--out", required=True, help="folder to write the .gz files to")
    p.add_argument(
        "--base-url", help="where the files are: a URL or a local folder (default: the public GitHub copy)"
    )
    p.add_argument("--langs", nargs="+", default=["en", "de", "fr"], choices=["en", "de", "fr"])
    p.set_defaults(handler=cmd_download)
    p = data_commands.add_parser(
        "prepare",
        help="tokenize a recipe's corpora once into memory-mapped arrays",
        description="Train the tokenizer on a sample, encode, filter and write the prepared dataset "
        "that `nmt train` maps (data.prepared, default <train.out_dir>/data); up to date: nothing to do.",
    )
    p.add_argument("--config", required=True, help="recipe file (see training/configs/)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe key, e.g. data.dedup=true"
    )
    p.add_argument("--workers", type=int, help="encoding processes (default: the CPU count)")
    p.set_defaults(handler=cmd_prepare)
    _add_serve(commands)
    return parser


def cmd_serve(args) -> None:
    import os

    from pydantic import ValidationError

    if args.models:
        os.environ["NMT_MODELS_DIR"] = args.models  # the workers read their settings from the environment
    from serving.registry import check_engines
    from serving.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = "NMT_" + "_".join(str(part) for part in first["loc"][:1]).upper()
        raise NmtError(f"{name}: {first['msg']}") from None
    # a missing or empty models folder, or an engine that cannot run a bundle, fails here in one line
    check_engines(settings)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        # every worker writes its metrics there and /metrics adds them up (prometheus_client's
        # multiprocess mode): without it each scrape would see one random worker's counts
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nmt-metrics-")
    import uvicorn

    uvicorn.run(
        "serving.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        # connection hygiene: head and body read timeouts, idle keep-alive, a connection limit
        # (beyond it uvicorn answers 503 with Connection: close), a bounded drain on SIGTERM
        http="serving.protocol:GuardedHttpToolsProtocol",
        # uvicorn annotates these two as int; it only hands them to call_later and wait_for
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
    )


def _add_serve(commands) -> None:
    p = commands.add_parser(
        "serve",
        help="serve the bundles over HTTP",
        description="Run the translation service (FastAPI under uvicorn). Settings come from NMT_* "
        "environment variables; see README.md.",
    )
    p.add_argument("--models", help="folder of model bundles (default: $NMT_MODELS_DIR or models/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own models")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args.handler(args)
    except NmtError as error:
        from nmt.train import Interrupted

        if isinstance(error, Interrupted):  # a checkpoint was saved: say so, exit as the signal asks
            with contextlib.suppress(OSError):  # stderr may be a closed pipe by now
                print(f"nmt {args.command}: {error}", file=sys.stderr)
            return 128 + error.signum
        print(f"nmt {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except UnicodeDecodeError as error:
        print(f"nmt {args.command}: error: input is not UTF-8 (byte {error.start})", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"nmt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return EXIT_ERROR
    except OSError as error:  # disk full, permission denied, ...: the OS's words name the file
        print(f"nmt {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
