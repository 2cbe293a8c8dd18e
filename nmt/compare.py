"""A/B comparison of systems on one test set, as `nmt compare` reports it.

A system is a model bundle, which translates the test set here, or a file of translations made
elsewhere (`--hyps NAME=FILE`: another machine, fairseq, Marian, ...); both are scored by the
same code. For each system: sacreBLEU BLEU, chrF and TER with 95% confidence intervals and a
paired significance test against the baseline (sacreBLEU's paired bootstrap resampling, the
same numbers `sacrebleu --paired-bs` prints), BLEU per source-length bucket, and for bundles
translation speed, parameters and bundle size. The report is a Markdown table, a JSON file and
a PNG chart (BLEU with its interval; BLEU by source length), plus the sentences on which the
systems disagree most (by the spread of their sentence-level chrF).
"""

from __future__ import annotations

import bisect
import json
import math
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from nmt.bundle import Bundle, load_bundle
from nmt.data import read_lines
from nmt.errors import NmtError
from nmt.languages import Direction
from nmt.translator import Translator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = ("BLEU", "chrF2", "TER")  # sacreBLEU's names for its default BLEU(), CHRF(), TER()
# Upper edges of the source-length buckets, in words: 1-10, 11-12, 13-15, 16-20, 21+. Sized for
# Multi30k (test_2016_flickr: 412, 222, 221, 108 and 37 of its 1,000 sentences); 37 is all it has
# above 20 words, and a bucket much smaller than that gives a BLEU too noisy to read.
LENGTH_EDGES = (10, 12, 15, 20)
LENGTH_UNIT = "source words (whitespace split)"


@dataclass
class System:
    """A model that translated the test set here, or translations read from a file."""

    name: str
    hypotheses: list[str]
    bundle: Bundle | None = None  # None for translations read from a file
    seconds: float | None = None  # wall time of translating the test set, for a bundle
    hyp_file: Path | None = None

    @property
    def origin(self) -> str:
        """The bundle's folder or the translations' file."""
        return str(self.bundle.path if self.bundle is not None else self.hyp_file)

    @property
    def size_bytes(self) -> int:
        assert self.bundle is not None
        return sum(f.stat().st_size for f in self.bundle.path.iterdir() if f.is_file())


def _file_language(path: Path) -> str | None:
    """'en' for test_2016_flickr.en.gz or newstest.en; None when the name does not say."""
    name = path.name.removesuffix(".gz")
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    return suffix if 2 <= len(suffix) <= 3 and suffix.isalpha() and suffix not in {"txt", "tsv"} else None


def _arrow(direction: Direction) -> str:
    return f"{direction.source}->{direction.target}"


def shared_directions(bundles: list[Bundle]) -> list[Direction]:
    """The directions every bundle translates, in the first bundle's order; NmtError if none."""
    shared = [d for d in bundles[0].directions if all(b.translates(d) for b in bundles[1:])]
    if not shared:
        listed = "; ".join(f"{b.path} translates {', '.join(map(_arrow, b.directions))}" for b in bundles)
        raise NmtError(f"the models share no direction: {listed}")
    return shared


def pick_direction(
    shared: list[Direction], src_file: Path, ref_file: Path, source: str | None, target: str | None
) -> Direction:
    """The one direction of `shared` that --source/--target and the test set's file names allow."""
    candidates = [
        d for d in shared if (source is None or d.source == source) and (target is None or d.target == target)
    ]
    if not candidates:
        asked = f"{source or '?'}->{target or '?'}"
        raise NmtError(f"the models do not share {asked}; they share {', '.join(map(_arrow, shared))}")
    named = _file_language(src_file), _file_language(ref_file)
    fitting = [d for d in candidates if named[0] in (None, d.source) and named[1] in (None, d.target)]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        if len(candidates) == 1:
            only = candidates[0]
            path, lang = (src_file, named[0]) if named[0] not in (None, only.source) else (ref_file, named[1])
            raise NmtError(f"{path} looks like '{lang}' text, but the models translate {_arrow(only)}")
        raise NmtError(
            f"{src_file} -> {ref_file} look like {named[0]}->{named[1]}, which the models do not share "
            f"({', '.join(map(_arrow, candidates))})"
        )
    raise NmtError(
        f"the models share several directions ({', '.join(map(_arrow, fitting))}): name one with "
        "--source and --target, or give files with {src} and {tgt} in their names to compare each"
    )


def read_test_set(src_file: Path, ref_file: Path) -> tuple[list[str], list[str]]:
    """The test set's source and reference lines, checked to be aligned."""
    src, ref = read_lines(src_file), read_lines(ref_file)
    if len(src) != len(ref):
        raise NmtError(f"{src_file} has {len(src)} lines but {ref_file} has {len(ref)}")
    return src, ref


def _names(bundles: list[Bundle]) -> list[str]:
    """The bundles' names, or their folders' where two bundles share a name."""
    names = [b.name for b in bundles]
    if len(set(names)) < len(names):
        names = [str(b.path) for b in bundles]
    return names


def read_hypotheses(
    named_files: list[tuple[str, Path]], taken: list[str], src_file: Path, sentences: int
) -> list[System]:
    """Systems from files of translations, one line per source sentence; names not in `taken`."""
    systems: list[System] = []
    for name, path in named_files:
        if name in taken or name in (s.name for s in systems):
            raise NmtError(f"--hyps {name}={path}: another system is already called {name}")
        hypotheses = read_lines(path)
        if len(hypotheses) != sentences:
            raise NmtError(f"{path} has {len(hypotheses)} lines but {src_file} has {sentences}")
        systems.append(System(name, hypotheses, hyp_file=path))
    return systems


def translate_systems(
    bundles: list[Bundle],
    src: list[str],
    device: str,
    batch_size: int,
    beam_size: int | None,
    target: str | None = None,
) -> list[System]:
    """Each bundle's translations of `src` (into `target`, for a multilingual one)."""
    systems = []
    for name, bundle in zip(_names(bundles), bundles, strict=True):
        translator = Translator.from_bundle(bundle, device, batch_size=batch_size)
        search = bundle.search.with_overrides(beam_size=beam_size, n_best=1)
        start = time.perf_counter()
        hypotheses = translator.translate_best(src, search, target)
        systems.append(System(name, hypotheses, bundle, time.perf_counter() - start))
    return systems


def _number(value: Any) -> float | None:
    """A plain float (sacreBLEU hands back numpy scalars), rounded for reading; None stays None."""
    return None if value is None else round(float(value), 4)


def significance(
    systems: list[System], refs: list[str], samples: int
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Paired bootstrap of every system against the first: (signatures, one row per system)."""
    test = PairedTest(
        [(s.name, s.hypotheses) for s in systems],
        {"BLEU": BLEU(), "chrF": CHRF(), "TER": TER()},
        references=[refs],
        test_type="bs",
        n_samples=samples,
    )
    signatures, results = test()
    rows = []
    for i, system in enumerate(systems):
        row: dict[str, Any] = {"name": system.name}
        for metric in METRICS:
            result = results[metric][i]
            row[metric] = {key: _number(getattr(result, key)) for key in ("score", "mean", "ci", "p_value")}
        rows.append(row)
    return {name: str(sig) for name, sig in signatures.items()}, rows


def most_different(
    systems: list[System], src: list[str], refs: list[str], count: int
) -> list[dict[str, Any]]:
    """The sentences whose sentence-level chrF varies most across the systems."""
    chrf = CHRF()
    spreads = []
    for i, ref in enumerate(refs):
        scores = [chrf.sentence_score(s.hypotheses[i], [ref]).score for s in systems]
        spreads.append((max(scores) - min(scores), i, scores))
    spreads.sort(key=lambda item: -item[0])
    return [
        {
            "line": i + 1,
            "source": src[i],
            "reference": refs[i],
            "translations": {
                s.name: {"text": s.hypotheses[i], "chrF": round(score, 1)}
                for s, score in zip(systems, scores, strict=True)
            },
        }
        for spread, i, scores in spreads[:count]
        if spread > 0
    ]


def parse_length_edges(text: str) -> tuple[int, ...]:
    """'10,15,20,30' -> (10, 15, 20, 30): the buckets' upper edges in source words, increasing."""
    message = f"--length-buckets {text}: expected increasing whole numbers of words, e.g. 10,15,20,30"
    try:
        edges = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise NmtError(message) from None
    if edges[0] < 1 or any(low >= high for low, high in pairwise(edges)):
        raise NmtError(message)
    return edges


def length_labels(edges: tuple[int, ...]) -> list[str]:
    """(10, 15) -> ['1-10', '11-15', '16+']."""
    lows = [1, *(edge + 1 for edge in edges)]
    spans = [f"{low}-{high}" if low < high else f"{high}" for low, high in zip(lows[:-1], edges, strict=True)]
    return [*spans, f"{lows[-1]}+"]


def length_buckets(src: list[str], edges: tuple[int, ...]) -> list[list[int]]:
    """The line indices in each bucket, by the source's word count (split on whitespace): bucket
    k holds edges[k-1]+1 .. edges[k] words, the last one more than edges[-1]; an empty source
    line (0 words) goes to the first."""
    buckets: list[list[int]] = [[] for _ in range(len(edges) + 1)]
    for i, line in enumerate(src):
        buckets[bisect.bisect_left(edges, len(line.split()))].append(i)
    return buckets


def bleu_by_length(
    systems: list[System], src: list[str], refs: list[str], edges: tuple[int, ...]
) -> tuple[str, list[list[dict[str, Any]]]]:
    """Corpus BLEU over each source-length bucket: (signature, per system one entry per bucket;
    BLEU is None where the bucket holds no sentence)."""
    bleu = BLEU()
    buckets = length_buckets(src, edges)
    per_system = [
        [
            {
                "words": label,
                "sentences": len(lines),
                "BLEU": _number(
                    bleu.corpus_score([s.hypotheses[i] for i in lines], [[refs[i] for i in lines]]).score
                )
                if lines
                else None,
            }
            for label, lines in zip(length_labels(edges), buckets, strict=True)
        ]
        for s in systems
    ]
    return str(bleu.get_signature()), per_system


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def length_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows: the buckets with their sentence counts; columns: the systems' BLEU."""
    lines = [
        "| source words | sentences | " + " | ".join(row["name"] for row in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for i, bucket in enumerate(rows[0]["bleu_by_length"]):
        scores = " | ".join(_or_dash(row["bleu_by_length"][i]["BLEU"]) for row in rows)
        lines.append(f"| {bucket['words']} | {bucket['sentences']} | {scores} |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], systems: list[System], sentences: int) -> str:
    """One row per system; '-' where a system read from a file has no model to measure."""
    lines = [
        "| model | arch | BLEU (95% CI) | p | chrF | TER | sent/s | parameters | size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, system in zip(rows, systems, strict=True):
        bleu = row["BLEU"]
        p_value = "baseline" if bleu["p_value"] is None else f"{bleu['p_value']:.4f}"
        model = ["-"] * 4
        if system.bundle is not None and system.seconds is not None:
            model = [
                system.bundle.model_config.architecture,
                f"{sentences / system.seconds:.1f}",
                f"{system.bundle.meta.get('parameters', 0):,}",
                f"{system.size_bytes / 1e6:.1f} MB",
            ]
        lines.append(
            f"| {system.name} | {model[0]} | {bleu['score']:.2f} (±{bleu['ci']:.2f}) | {p_value} "
            f"| {row['chrF2']['score']:.2f} | {row['TER']['score']:.2f} | {model[1]} | {model[2]} | {model[3]} |"
        )
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], title: str) -> Figure:
    """Two panels: BLEU of each system with its 95% confidence interval; BLEU by source length,
    one line per system (a gap where a bucket is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    buckets = rows[0]["bleu_by_length"]
    fig, (ax, by_length) = plt.subplots(
        1,
        2,
        figsize=(1.6 * len(rows) + 1.2 * len(buckets) + 4, 4),
        gridspec_kw={"width_ratios": [1.6 * len(rows) + 1, 1.2 * len(buckets) + 2]},
    )
    ax.bar(
        names,
        [r["BLEU"]["mean"] for r in rows],
        yerr=[r["BLEU"]["ci"] for r in rows],
        capsize=6,
        color="tab:blue",
    )
    ax.set(ylabel="BLEU (bootstrap mean, 95% CI)", title=title)
    ax.tick_params(axis="x", labelrotation=15)
    positions = range(len(buckets))
    for row in rows:
        scores = [math.nan if b["BLEU"] is None else b["BLEU"] for b in row["bleu_by_length"]]
        by_length.plot(positions, scores, marker="o", label=row["name"])
    by_length.set_xticks(list(positions), [f"{b['words']}\n(n={b['sentences']})" for b in buckets])
    by_length.set(xlabel=LENGTH_UNIT, ylabel="BLEU", title="BLEU by source length")
    by_length.set_ylim(bottom=0)
    by_length.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot(rows: list[dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = chart(rows, title)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def compare(
    paths: list[Path],
    src_file: Path,
    ref_file: Path,
    baseline: str | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    beam_size: int | None = None,
    samples: int = 1000,
    examples: int = 5,
    hyps: list[tuple[str, Path]] | None = None,
    length_edges: tuple[int, ...] = LENGTH_EDGES,
    source: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Translate the test set with every model, read the translations in `hyps` ((name, file)
    pairs), and score them all; write the report when `out_dir` is set.

    The models are compared on one direction they all translate: the one `source` / `target`
    and the test set's file names leave. Files named with ``{src}`` and ``{tgt}``
    (``test.{src}.gz``) compare every shared direction (of those `source` / `target` allow),
    each on its own files: the report is then {"directions": {"en-de": report, ...}}, each
    written to OUT_DIR/en-de/."""
    if not paths and not hyps:
        raise NmtError("nothing to compare: give --models BUNDLE..., --hyps NAME=FILE..., or both")
    options = (baseline, device, batch_size, beam_size, samples, examples, hyps, length_edges)
    bundles = [load_bundle(path) for path in paths]
    if "{src}" in str(src_file) or "{tgt}" in str(ref_file):
        if not bundles:
            raise NmtError("--src with {src}: compares the directions of --models; give some")
        directions = [
            d
            for d in shared_directions(bundles)
            if (source is None or d.source == source) and (target is None or d.target == target)
        ]
        if not directions:
            raise NmtError(f"the models share no direction from {source or 'any'} into {target or 'any'}")
        reports = {}
        for d in directions:
            src_d = Path(str(src_file).format(src=d.source, tgt=d.target))
            ref_d = Path(str(ref_file).format(src=d.source, tgt=d.target))
            out = out_dir / str(d) if out_dir is not None else None
            reports[str(d)] = _compare_direction(bundles, src_d, ref_d, d, out, *options)
        return {"directions": reports}
    direction = None
    if bundles:
        direction = pick_direction(shared_directions(bundles), src_file, ref_file, source, target)
    return _compare_direction(bundles, src_file, ref_file, direction, out_dir, *options)


def _compare_direction(
    bundles: list[Bundle],
    src_file: Path,
    ref_file: Path,
    direction: Direction | None,
    out_dir: Path | None,
    baseline: str | None,
    device: str,
    batch_size: int,
    beam_size: int | None,
    samples: int,
    examples: int,
    hyps: list[tuple[str, Path]] | None,
    length_edges: tuple[int, ...],
) -> dict[str, Any]:
    """`compare` on one direction, which every bundle translates (None: no bundles, translations
    from files only)."""
    src, refs = read_test_set(src_file, ref_file)
    if not refs:
        raise NmtError(f"{ref_file}: the reference is empty")
    from_files = read_hypotheses(hyps or [], _names(bundles), src_file, len(src))
    target = direction.target if direction is not None else None
    systems = translate_systems(bundles, src, device, batch_size, beam_size, target) + from_files
    if baseline is not None:
        found = [s for s in systems if baseline in (s.name, s.origin)]
        if not found:
            raise NmtError(f"--baseline {baseline}: not one of {', '.join(s.name for s in systems)}")
        systems.remove(found[0])
        systems.insert(0, found[0])
    signatures, rows = significance(systems, refs, samples)
    length_signature, by_length = bleu_by_length(systems, src, refs, length_edges)
    for row, system, buckets in zip(rows, systems, by_length, strict=True):
        if system.bundle is not None and system.seconds is not None:
            row |= {
                "bundle": str(system.bundle.path),
                "version": system.bundle.version,
                "architecture": system.bundle.model_config.architecture,
                "sentences_per_s": len(src) / system.seconds,
                "parameters": system.bundle.meta.get("parameters"),
                "size_bytes": system.size_bytes,
            }
        else:
            row["hypotheses"] = system.origin
        row["bleu_by_length"] = buckets
    report = {
        "direction": None if direction is None else str(direction),
        "test_set": {"src": str(src_file), "ref": str(ref_file), "sentences": len(src)},
        "baseline": systems[0].name,
        "signatures": signatures,
        "length_buckets": {
            "unit": LENGTH_UNIT,
            "edges": list(length_edges),
            "buckets": [{"words": b["words"], "sentences": b["sentences"]} for b in by_length[0]],
            "signature": length_signature,
        },
        "systems": rows,
        "most_different": most_different(systems, src, refs, examples),
        "table": markdown(rows, systems, len(src)),
        "length_table": length_markdown(rows),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "compare.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (out_dir / "compare.md").write_text(_markdown_report(report), encoding="utf-8")
        plot(rows, out_dir / "compare.png", f"{src_file.name} -> {ref_file.name}")
    return report


def _markdown_report(report: dict[str, Any]) -> str:
    parts = [
        f"# {report['test_set']['src']} ({report['test_set']['sentences']} sentences)\n",
        report["table"] + "\n",
        f"p: paired bootstrap resampling against the baseline, {report['baseline']}.\n",
        "Signatures:\n\n"
        + "\n".join(f"- {name}: `{sig}`" for name, sig in report["signatures"].items())
        + "\n",
        "## BLEU by source length\n",
        report["length_table"] + "\n",
        f"Sentences grouped by the number of {LENGTH_UNIT}; corpus BLEU within each group "
        f"(`{report['length_buckets']['signature']}`), '-' where a group is empty.\n",
        "## Where the systems differ most\n",
    ]
    for example in report["most_different"]:
        parts.append(f"Line {example['line']}: {example['source']}\n\n- reference: {example['reference']}")
        parts.extend(
            f"- {name} (chrF {t['chrF']}): {t['text']}" for name, t in example["translations"].items()
        )
        parts.append("")
    return "\n".join(parts) + "\n"
