"""A run's metrics: one JSON line per event in `metrics.jsonl`, and a PNG plot of them.

Records carry a `kind` (`data`, `train`, `valid`) and the optimizer `step`; on resume the
lines written after the checkpoint are dropped, so the log tells one consistent history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, **record: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a kill: everything before it is good
        return records

    def truncate_after(self, step: int) -> None:
        """Keep the records up to optimizer step `step` (the checkpoint we resume from)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
        )


def plot_metrics(records: list[dict[str, Any]], png: Path, title: str = "") -> None:
    """Training and validation loss by step, and validation BLEU by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    fig, (loss_ax, bleu_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    loss_ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid")
    loss_ax.set(xlabel="step", ylabel="loss per token", title="loss")
    loss_ax.legend()
    bleu_ax.plot([r["step"] for r in valid], [r["bleu"] for r in valid], "o-", color="tab:green")
    bleu_ax.set(xlabel="step", ylabel="BLEU", title="validation BLEU")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
