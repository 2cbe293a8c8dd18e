"""Split a text into sentences to translate one by one, and join the translations back.

The models are trained on single sentences, so a paragraph is cut at line breaks and after
sentence-final punctuation followed by a capital letter or digit; what separated the pieces
(spaces, newlines) is kept and put back between the translations. An abbreviation followed by a
capitalised word ("Dr. Smith") is cut too: a known weakness of rule-based splitting, harmless
here because both halves are still translated.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"(\s*\n\s*|(?<=[.!?…])\s+(?=[\"'„“‘«(\[¿¡]?[A-ZÀ-ÖØ-Þ0-9]))")


def split_sentences(text: str) -> tuple[list[str], list[str]]:
    """(sentences, separators), len(separators) == len(sentences) - 1; empty pieces are dropped."""
    parts = _BOUNDARY.split(text.strip())
    sentences, separators = [parts[0]], []
    for separator, sentence in zip(parts[1::2], parts[2::2], strict=True):
        if sentence:
            separators.append("\n" * separator.count("\n") or " ")
            sentences.append(sentence)
    return sentences, separators


def join_sentences(translations: list[str], separators: list[str]) -> str:
    pieces = [translations[0]]
    for separator, translation in zip(separators, translations[1:], strict=True):
        pieces += [separator, translation]
    return "".join(pieces)
