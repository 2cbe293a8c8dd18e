"""Language detection, restricted to the languages the service translates from: py3langid's
naive Bayes model (shipped inside its wheel, loaded once at start-up), and `source: "auto"`
resolved to the detected language.

Why py3langid: on test_2016_flickr (en, de, fr; 1,000 sentences each) it, lingua and fastText's
compressed lid.176 model are all right on every full sentence, but on the first two words of each
py3langid is right most often, it is among the fastest, its install is 4.5 MB (lingua's 96 MB) and
it needs nothing beyond numpy (docs/service.md has the figures and `benchmarks/detect.py` makes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.errors import ApiError

if TYPE_CHECKING:
    from serving.services import Services

DETECT_CHARS = 2000  # a text's language shows in its beginning; the rest would only cost time


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # a percentage, 0..100, as LibreTranslate answers it

    def as_json(self) -> dict[str, str | float]:
        return {"language": self.language, "confidence": self.confidence}


class LanguageDetector:
    """Ranks the `languages` (ISO 639-1 codes) for a text; those py3langid does not know are never
    answered (a single language is always answered, with confidence 100)."""

    def __init__(self, languages: Iterable[str]) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.languages = sorted(set(languages))
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.known = [code for code in self.languages if code in self._identifier.labels]
        if self.known:
            self._identifier.set_languages(self.known)

    def detect(self, text: str) -> list[Detection]:
        """The languages by likelihood, most likely first (empty when none can be told)."""
        if len(self.languages) == 1:
            return [Detection(self.languages[0], 100.0)]
        if not self.known:
            return []
        ranked = self._identifier.rank(text[:DETECT_CHARS])
        return [Detection(code, round(100 * probability, 1)) for code, probability in ranked]


def resolve_source(
    detector: LanguageDetector, languages: dict[str, list[str]], target: str, texts: list[str]
) -> Detection:
    """The source language of `texts` (detected as one text) for `source: "auto"`; 400 naming
    `source` when it cannot be told or has no model into `target` (`languages`: source -> targets)."""
    ranked = detector.detect("\n".join(texts))
    if not ranked:
        raise ApiError(400, "source", "the language cannot be detected here; name the source language")
    best = ranked[0]
    if target not in languages.get(best.language, []):
        raise ApiError(
            400,
            "source",
            f"detected '{best.language}' ({best.confidence:g}% confident), "
            f"and no model translates {best.language} into {target}",
        )
    return best


def auto_source(services: Services, source: str, target: str, texts: list[str]) -> Detection | None:
    """The detected language when a request asks for `source: "auto"`, else None."""
    if source != "auto":
        return None
    assert services.detector is not None  # made in the lifespan
    return resolve_source(services.detector, services.registry.languages(), target, texts)
