"""How far to trust a translation: a confidence in [0, 1] from the model's own scores, and the
detection of degenerate output (a word or phrase repeated over and over, a letter stretched out).

A translation's features (`features`) are its length-normalised log-probability, whether it is
degenerate, and how far its length strays from the source's. `Calibration` maps them to the
probability that the translation is good (sentence chrF of at least `GOOD_CHRF` against a
reference): a logistic regression fitted on a held-out set (`fit_calibration`, run by
`nmt calibrate --model B --src val.en.gz --ref val.de.gz`) and stored in the bundle's bundle.json
under "confidence" (metadata, not hashed into the version). A bundle without one falls back to
`fallback_confidence`: exp(score), the geometric mean of the tokens' probabilities, halved when
the output is degenerate.

Letters: N translations, F features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt.config import SearchConfig
from nmt.errors import NmtError

if TYPE_CHECKING:
    from nmt.translator import Translation, Translator

FEATURES = ("score", "degenerate", "length_gap")
GOOD_CHRF = 40.0  # a sentence at or above this chrF counts as a good translation when fitting
THRESHOLD = 0.5  # below this a translation is flagged low_confidence (more likely bad than good)
REPEAT_NGRAM = 3  # degenerate output is decoded again with n-grams of this size blocked
SCORE_FLOOR = -30.0  # an empty or failed translation scores -inf; features take this instead

_STRETCHED = re.compile(r"([^\W\d_])\1{3,}")  # a letter four times or more in a row


def degenerate(text: str) -> bool:
    """Whether `text` looks like a decoder stuck in a loop: a word, or a run of two or three
    words, three times in a row ("du du du", "in der in der in der"), or a letter four times in
    a row ("Trannnnnn"; digits are not letters: "1000000" is fine)."""
    if _STRETCHED.search(text):
        return True
    words = text.lower().split()
    for n in (1, 2, 3):
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return True
    return False


def features(source: str, translation: str, score: float) -> list[float]:
    """The F features of one translation of `source` (its score, as the search ranks it)."""
    score = score if math.isfinite(score) else SCORE_FLOOR
    gap = abs(math.log((len(translation.split()) + 1) / (len(source.split()) + 1)))
    return [max(score, SCORE_FLOOR), float(degenerate(translation)), gap]


def fallback_confidence(row: Sequence[float]) -> float:
    """Without a calibration: exp(score), halved for degenerate output."""
    value = math.exp(min(0.0, row[0]))
    return value / 2 if row[1] else value


@dataclass(frozen=True)
class Calibration:
    """A logistic regression over standardised features: sigmoid(w . (x - mean) / std + b)."""

    weights: list[float]
    bias: float
    mean: list[float]
    std: list[float]
    threshold: float = THRESHOLD
    fitted_on: dict[str, Any] | None = None  # what it was fitted on, for the record

    def confidence(self, row: Sequence[float]) -> float:
        z = self.bias + sum(
            w * (x - m) / s for w, x, m, s in zip(self.weights, row, self.mean, self.std, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_meta(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": [round(w, 6) for w in self.weights],
            "bias": round(self.bias, 6),
            "mean": [round(m, 6) for m in self.mean],
            "std": [round(s, 6) for s in self.std],
            "threshold": self.threshold,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_meta(cls, meta: Any) -> Calibration | None:
        """The calibration stored in a bundle's metadata; None when it has none, or one made for
        other features (then the fallback serves)."""
        if not isinstance(meta, dict) or meta.get("features") != list(FEATURES):
            return None
        try:
            fields = [[float(v) for v in meta[key]] for key in ("weights", "mean", "std")]
            if any(len(values) != len(FEATURES) for values in fields) or min(fields[2]) <= 0:
                return None
            weights, mean, std = fields
            threshold = float(meta.get("threshold", THRESHOLD))
            return cls(weights, float(meta["bias"]), mean, std, threshold, meta.get("fitted_on"))
        except (KeyError, TypeError, ValueError):
            return None


KNOWN_ENTRIES = 65536  # answers a Scorer remembers (a few MB)


class Scorer:
    """Confidence of translations by one bundle: its calibration, else the fallback."""

    def __init__(self, calibration: Calibration | None) -> None:
        self.calibration = calibration
        self.threshold = calibration.threshold if calibration else THRESHOLD
        # a cache hit asks again for what it asked before: remember the answers (a pure function)
        self._known: dict[tuple[str, str, float], float] = {}

    @classmethod
    def for_meta(cls, meta: dict[str, Any]) -> Scorer:
        return cls(Calibration.from_meta(meta.get("confidence")))

    def confidence(self, source: str, translation: str, score: float) -> float:
        known = self._known.get((source, translation, score))
        if known is not None:
            return known
        row = features(source, translation, score)
        value = fallback_confidence(row) if self.calibration is None else self.calibration.confidence(row)
        if len(self._known) >= KNOWN_ENTRIES:
            self._known.clear()
        self._known[(source, translation, score)] = value
        return value

    def low(self, confidence: float) -> bool:
        return confidence < self.threshold


def repair_search(search: SearchConfig) -> SearchConfig:
    """The search that decodes degenerate output again: the same, with repeated n-grams blocked."""
    return search.with_overrides(no_repeat_ngram=REPEAT_NGRAM)


def to_repair(best: Sequence[str]) -> list[int]:
    """Indices of the translations that are degenerate, to decode again with `repair_search`."""
    return [i for i, text in enumerate(best) if degenerate(text)]


def translate_checked(
    translator: Translator,
    texts: list[str],
    search: SearchConfig,
    alignments: bool = False,
    target: str | None = None,
) -> list[Translation]:
    """Each text's best translation, degenerate ones decoded again with repetition blocking (as
    the service does); `alignments` and `target` as `Translator.translate` takes them."""
    best = [nbest[0] for nbest in translator.translate(texts, search, alignments, target=target)]
    redo = to_repair([t.text for t in best])
    if redo:
        again = translator.translate(
            [texts[i] for i in redo],
            repair_search(search.with_overrides(n_best=1)),
            alignments,
            target=target,
        )
        for i, nbest in zip(redo, again, strict=True):
            best[i] = nbest[0]
    return best


def calibrate(
    bundle_path: Path,
    sources: list[str],
    references: list[str],
    translator: Translator,
    search: SearchConfig,
    src_name: str,
    target: str | None = None,
) -> tuple[Calibration, float]:
    """Fit the bundle's calibration on a held-out set and store it in its bundle.json:
    (the calibration, its ROC AUC of good against bad translations on that set). A bundle of
    several directions has one calibration, fitted on the direction into `target`."""
    from sacrebleu.metrics import CHRF

    from nmt.bundle import record_meta

    chrf = CHRF()
    best = translate_checked(translator, sources, search, target=target)
    rows = np.array([features(s, t.text, t.score) for s, t in zip(sources, best, strict=True)])
    good = np.array(
        [chrf.sentence_score(t.text, [r]).score >= GOOD_CHRF for t, r in zip(best, references, strict=True)]
    )
    if good.all() or not good.any():
        raise NmtError(
            f"{src_name}: every translation is {'good' if good.all() else 'bad'} (sentence chrF "
            f"{'>=' if good.all() else '<'} {GOOD_CHRF:g}); a calibration needs both: use a bigger set"
        )
    fitted = fit_calibration(rows, good)
    auc = roc_auc([fitted.confidence(row) for row in rows], good)
    record = {
        "src": src_name,
        "sentences": len(sources),
        "good": int(good.sum()),
        "good_chrf": GOOD_CHRF,
        "auc": round(auc, 4),
    }
    fitted = Calibration(fitted.weights, fitted.bias, fitted.mean, fitted.std, THRESHOLD, record)
    record_meta(bundle_path, "confidence", fitted.to_meta())
    return fitted, auc


def fit_calibration(rows: np.ndarray, good: np.ndarray, l2: float = 1.0, steps: int = 50) -> Calibration:
    """A logistic regression of `good` (N,) bools on `rows` (N, F) by Newton's method, with an L2
    penalty on the weights (not the bias): a feature that never varies (no degenerate output in
    the set) gets a weight of 0, not a blow-up."""
    rows, good = np.asarray(rows, dtype=np.float64), np.asarray(good, dtype=np.float64)
    mean, std = rows.mean(0), rows.std(0)
    std[std < 1e-9] = 1.0
    x = np.hstack([(rows - mean) / std, np.ones((len(rows), 1))])  # (N, F + 1)
    penalty = np.diag([l2] * rows.shape[1] + [0.0])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -50, 50)))
        gradient = x.T @ (p - good) + penalty @ w
        hessian = (x.T * (p * (1 - p))) @ x + penalty + 1e-9 * np.eye(len(w))
        delta = np.linalg.solve(hessian, gradient)
        w -= delta
        if np.abs(delta).max() < 1e-8:
            break
    return Calibration(w[:-1].tolist(), float(w[-1]), mean.tolist(), std.tolist())


def roc_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """The probability that a random positive scores above a random negative (ties count half):
    the area under the ROC curve, by ranks (Mann-Whitney U)."""
    values, labels = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs positives and negatives")
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):  # average ranks over ties
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
