"""The table of docs/seeds.md from the folder `training/seeds.sh` wrote.

    python training/seeds_report.py OUT [--thresholds 25,35]

Reads each run's metrics.jsonl (the trainer's log: training tokens/s every 50 steps, one validation
record an epoch with its BLEU, its own seconds and the training seconds so far) and the two
`nmt compare` reports (test BLEU with its 95% interval, sentences/s on 2 CPU threads and on the
GPU, parameters). "Wall" seconds are training plus validation, start-up not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of a metrics.jsonl."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "train"], [r for r in records if r["kind"] == "valid"]


def first_over(valid: list[dict], threshold: float) -> str:
    """'epoch / wall s' when validation BLEU first reached `threshold`, or '-'."""
    wall = 0.0
    for record in valid:
        wall += record["seconds"]
        if record["bleu"] >= threshold:
            return f"{record['epoch']} / {record['train_seconds'] + wall:.0f}"
    return "-"


def table(out: Path, thresholds: list[float]) -> str:
    cpu = {s["name"]: s for s in json.loads((out / "compare-cpu" / "compare.json").read_text())["systems"]}
    gpu_file = out / "compare-gpu" / "compare.json"
    gpu = {s["name"]: s for s in json.loads(gpu_file.read_text())["systems"]} if gpu_file.is_file() else {}
    head = ["model", "parameters", "train tok/s", "epochs", "train s"]
    head += [f"val {t:g}: epoch / wall s" for t in thresholds]
    head += ["best val BLEU (epoch)", "test BLEU (95% CI)", "sent/s CPU", "sent/s GPU"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, system in cpu.items():
        train, valid = read_log(out / name / "metrics.jsonl")
        best = max(valid, key=lambda r: r["bleu"])
        bleu = system["BLEU"]
        cells = [
            name,
            f"{system['parameters']:,}",
            f"{statistics.median(r['tokens_per_s'] for r in train):,.0f}",
            str(valid[-1]["epoch"]),
            f"{valid[-1]['train_seconds']:.0f}",
            *(first_over(valid, t) for t in thresholds),
            f"{best['bleu']:.2f} ({best['epoch']})",
            f"{bleu['score']:.2f} (±{bleu['ci']:.2f})",
            f"{system['sentences_per_s']:.0f}",
            f"{gpu[name]['sentences_per_s']:.0f}" if name in gpu else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder training/seeds.sh wrote")
    parser.add_argument("--thresholds", default="25,35", help="validation BLEU marks (default 25,35)")
    args = parser.parse_args()
    print(table(args.out, [float(t) for t in args.thresholds.split(",")]))


if __name__ == "__main__":
    main()
