"""Corpus scores with sacreBLEU: BLEU, chrF and TER, each with its signature.

Scores are computed on detokenized text with sacreBLEU's defaults (BLEU and chrF cased, 13a
tokenizer; TER case-insensitive), the setting that makes numbers comparable across papers;
`lowercase=True` gives the `-lc` variant of BLEU and chrF.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.errors import DataError


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    ter: float
    signatures: dict[str, str]

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  TER {self.ter:.2f}\n" + "\n".join(
            f"  {name}: {sig}" for name, sig in self.signatures.items()
        )


def corpus_scores(hypotheses: list[str], references: list[str], lowercase: bool = False) -> Scores:
    """Score hypotheses against one reference each; lists must be aligned and non-empty."""
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise DataError("nothing to score: the reference is empty")
    # TER keeps sacreBLEU's default (case-insensitive), so every signature is the default one
    metrics = {"bleu": BLEU(lowercase=lowercase), "chrf": CHRF(lowercase=lowercase), "ter": TER()}
    values, signatures = {}, {}
    for name, metric in metrics.items():
        values[name] = round(metric.corpus_score(hypotheses, [references]).score, 2)
        signatures[name] = str(metric.get_signature())
    return Scores(**values, signatures=signatures)


def bleu_only(hypotheses: list[str], references: list[str]) -> tuple[float, float, str]:
    """(BLEU, chrF, BLEU signature): the cheap pair used for validation during training."""
    bleu, chrf = BLEU(), CHRF()
    return (
        bleu.corpus_score(hypotheses, [references]).score,
        chrf.corpus_score(hypotheses, [references]).score,
        str(bleu.get_signature()),
    )
