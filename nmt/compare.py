"""A/B comparison of models on one test set, as `nmt compare` reports it.

For each model: sacreBLEU BLEU, chrF and TER with 95% confidence intervals and a paired
significance test against the baseline (sacreBLEU's paired bootstrap resampling, the same
numbers `sacrebleu --paired-bs` prints), translation speed, parameters and bundle size. The
report is a Markdown table, a JSON file and a PNG chart of BLEU with its interval, plus the
sentences on which the systems disagree most (by the spread of their sentence-level chrF).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from nmt.bundle import Bundle, load_bundle
from nmt.config import SearchConfig
from nmt.data import read_lines
from nmt.errors import NmtError
from nmt.translator import Translator

METRICS = ("BLEU", "chrF2", "TER")  # sacreBLEU's names for its default BLEU(), CHRF(), TER()


@dataclass
class System:
    name: str
    bundle: Bundle
    hypotheses: list[str]
    seconds: float  # wall time of translating the test set

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.bundle.path.iterdir() if f.is_file())


def _file_language(path: Path) -> str | None:
    """'en' for test_2016_flickr.en.gz or newstest.en; None when the name does not say."""
    name = path.name.removesuffix(".gz")
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    return suffix if 2 <= len(suffix) <= 3 and suffix.isalpha() and suffix not in {"txt", "tsv"} else None


def load_systems(
    paths: list[Path], src_file: Path, ref_file: Path
) -> tuple[list[Bundle], list[str], list[str]]:
    """Load and check the bundles and the test set: one language pair, aligned non-empty files."""
    bundles = [load_bundle(path) for path in paths]
    pair = (bundles[0].src_lang, bundles[0].tgt_lang)
    for bundle in bundles[1:]:
        if (bundle.src_lang, bundle.tgt_lang) != pair:
            raise NmtError(
                f"{bundle.path} translates {bundle.src_lang}->{bundle.tgt_lang}, "
                f"but {bundles[0].path} translates {pair[0]}->{pair[1]}"
            )
    for path, lang in ((src_file, pair[0]), (ref_file, pair[1])):
        named = _file_language(path)
        if named is not None and named != lang:
            raise NmtError(f"{path} looks like '{named}' text, but the models translate {pair[0]}->{pair[1]}")
    src, ref = read_lines(src_file), read_lines(ref_file)
    if len(src) != len(ref):
        raise NmtError(f"{src_file} has {len(src)} lines but {ref_file} has {len(ref)}")
    return bundles, src, ref


def _names(bundles: list[Bundle]) -> list[str]:
    """The bundles' names, or their folders' where two bundles share a name."""
    names = [b.name for b in bundles]
    if len(set(names)) < len(names):
        names = [str(b.path) for b in bundles]
    return names


def translate_systems(
    bundles: list[Bundle], src: list[str], device: str, batch_size: int, beam_size: int | None
) -> list[System]:
    systems = []
    for name, bundle in zip(_names(bundles), bundles, strict=True):
        translator = Translator.from_bundle(bundle, device, batch_size=batch_size)
        search = (
            bundle.search
            if beam_size is None
            else SearchConfig(**{**bundle.search.model_dump(), "beam_size": beam_size, "n_best": 1})
        )
        start = time.perf_counter()
        hypotheses = translator.translate_best(src, search)
        systems.append(System(name, bundle, hypotheses, time.perf_counter() - start))
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


def markdown(rows: list[dict[str, Any]], systems: list[System], sentences: int) -> str:
    lines = [
        "| model | arch | BLEU (95% CI) | p | chrF | TER | sent/s | parameters | size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, system in zip(rows, systems, strict=True):
        bleu = row["BLEU"]
        p_value = "baseline" if bleu["p_value"] is None else f"{bleu['p_value']:.4f}"
        lines.append(
            f"| {system.name} | {system.bundle.model_config.architecture} | {bleu['score']:.2f} (±{bleu['ci']:.2f}) | {p_value} "
            f"| {row['chrF2']['score']:.2f} | {row['TER']['score']:.2f} | {sentences / system.seconds:.1f} "
            f"| {system.bundle.meta.get('parameters', 0):,} | {system.size_bytes / 1e6:.1f} MB |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], png: Path, title: str) -> None:
    """BLEU of each model with its 95% confidence interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    ax.bar(
        names,
        [r["BLEU"]["mean"] for r in rows],
        yerr=[r["BLEU"]["ci"] for r in rows],
        capsize=6,
        color="tab:blue",
    )
    ax.set(ylabel="BLEU (bootstrap mean, 95% CI)", title=title)
    ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
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
) -> dict[str, Any]:
    """Translate and score the test set with every model; write the report when `out_dir` is set."""
    bundles, src, refs = load_systems(paths, src_file, ref_file)
    if not refs:
        raise NmtError(f"{ref_file}: the reference is empty")
    systems = translate_systems(bundles, src, device, batch_size, beam_size)
    if baseline is not None:
        found = [s for s in systems if baseline in (s.name, str(s.bundle.path))]
        if not found:
            raise NmtError(f"--baseline {baseline}: not one of {', '.join(s.name for s in systems)}")
        systems.remove(found[0])
        systems.insert(0, found[0])
    signatures, rows = significance(systems, refs, samples)
    for row, system in zip(rows, systems, strict=True):
        row |= {
            "bundle": str(system.bundle.path),
            "version": system.bundle.version,
            "architecture": system.bundle.model_config.architecture,
            "sentences_per_s": len(src) / system.seconds,
            "parameters": system.bundle.meta.get("parameters"),
            "size_bytes": system.size_bytes,
        }
    report = {
        "test_set": {"src": str(src_file), "ref": str(ref_file), "sentences": len(src)},
        "baseline": systems[0].name,
        "signatures": signatures,
        "systems": rows,
        "most_different": most_different(systems, src, refs, examples),
        "table": markdown(rows, systems, len(src)),
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
        "## Where the systems differ most\n",
    ]
    for example in report["most_different"]:
        parts.append(f"Line {example['line']}: {example['source']}\n\n- reference: {example['reference']}")
        parts.extend(
            f"- {name} (chrF {t['chrF']}): {t['text']}" for name, t in example["translations"].items()
        )
        parts.append("")
    return "\n".join(parts) + "\n"
