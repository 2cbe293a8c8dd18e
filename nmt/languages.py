"""Translation directions, and the token that steers a multilingual model (Johnson et al. 2017).

A bilingual model translates one direction and its source sentences are just their pieces. A
multilingual model (one model, several directions) is trained and decoded with a *language token*
naming the target language, ``<2de>``, put before the source sentence's pieces (EOS still ends it):
the decoder learns to translate into the language the token names. The tokens are user-defined
pieces of the joint SentencePiece model, so each is one id and never split.

A bundle's ``bundle.json`` lists its directions (``"directions": [["en", "de"], ...]``) and says
whether its sources carry a language token (``"language_tokens": true``); bundles from before
multilingual models have only ``src_lang`` / ``tgt_lang`` and no tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ISO 639-1/-3 codes, optionally with a region or script: en, de, fr, pt-BR, zh-Hant
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


def check_language(code: str) -> str:
    """`code` if it is a language code like ``en`` or ``pt-BR``; ValueError otherwise."""
    if not isinstance(code, str) or not LANGUAGE_CODE.match(code):
        raise ValueError(f"{code!r} is not a language code (like 'en', 'de' or 'pt-BR')")
    return code


def language_token(target: str) -> str:
    """The piece that asks a multilingual model for `target`: ``language_token("de") == "<2de>"``."""
    return f"<2{check_language(target)}>"


@dataclass(frozen=True, order=True)
class Direction:
    """One translation direction, e.g. ``Direction("en", "de")``, written ``en-de``."""

    source: str
    target: str

    def __post_init__(self) -> None:
        check_language(self.source)
        check_language(self.target)
        if self.source == self.target:
            raise ValueError(f"a direction needs two languages, not {self.source} to {self.source}")

    def __str__(self) -> str:
        return f"{self.source}-{self.target}"

    @classmethod
    def parse(cls, text: str) -> Direction:
        """``"en-de"`` -> ``Direction("en", "de")`` (a region code needs the list form in bundle.json)."""
        source, sep, target = text.partition("-")
        if not sep:
            raise ValueError(f"{text!r} is not a direction like 'en-de'")
        return cls(source, target)
