"""Files translated whole: .txt, .html, .srt and .docx, each read and written with its own
library, the text going through the same pipeline as `/translate` (serving/translation.py).

- .txt: every non-blank line is a text; blank lines and line ends are kept.
- .html: the page as one `format: "html"` text (nmt/markup.py).
- .srt: `srt` (a small, maintained parser): numbering and timings kept, each subtitle's text
  translated (its line breaks kept as sentence breaks).
- .docx: `python-docx`: every paragraph of the body, of tables (nested too) and of headers and
  footers. A paragraph's runs (stretches of one formatting) become inline elements of an HTML
  text, so the alignment moves each run's formatting onto the target words translated from it
  (as it moves <b> in HTML); text between runs joins the run before it.

`Translate` is the callback doing the translation: (texts, format) -> translations.
"""

from __future__ import annotations

import html
import io
from collections.abc import Awaitable, Callable
from pathlib import PurePath

import lxml.html

Translate = Callable[[list[str], str], Awaitable[list[str]]]

MEDIA_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".srt": "application/x-subrip; charset=utf-8",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class FileError(ValueError):
    """The file cannot be read as its type says (a 400 naming `file`)."""


def suffix(filename: str) -> str:
    return PurePath(filename).suffix.lower()


def text_chars(filename: str, data: bytes) -> int:
    """The characters of text a file holds (what counts against NMT_MAX_CHARS)."""
    return sum(map(len, _texts(filename, data)))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileError(f"not UTF-8 text (byte {error.start})") from None


def _texts(filename: str, data: bytes) -> list[str]:
    kind = suffix(filename)
    if kind == ".txt":
        return [line for line in _decode(data).splitlines() if line.strip()]
    if kind in (".html", ".htm"):
        return [_decode(data)]
    if kind == ".srt":
        return [subtitle.content for subtitle in _subtitles(data)]
    if kind == ".docx":
        return [paragraph.text for paragraph in _paragraphs(_document(data))]
    raise FileError(f"unsupported type {kind or '(none)'}")


async def translate_file(filename: str, data: bytes, translate: Translate) -> bytes:
    """The translated file, in the same format."""
    kind = suffix(filename)
    if kind == ".txt":
        return (await _translate_txt(_decode(data), translate)).encode()
    if kind in (".html", ".htm"):
        return (await translate([_decode(data)], "html"))[0].encode()
    if kind == ".srt":
        import srt

        subtitles = _subtitles(data)
        texts = [s.content for s in subtitles if s.content.strip()]
        done = iter(await translate(texts, "text") if texts else [])
        for subtitle in subtitles:
            if subtitle.content.strip():
                subtitle.content = next(done)
        return srt.compose(subtitles, reindex=False).encode()
    if kind == ".docx":
        return await _translate_docx(data, translate)
    raise FileError(f"unsupported type {kind or '(none)'}")


async def _translate_txt(text: str, translate: Translate) -> str:
    lines = text.splitlines(keepends=True)
    todo = [i for i, line in enumerate(lines) if line.strip()]
    done = await translate([lines[i].strip() for i in todo], "text") if todo else []
    for i, translation in zip(todo, done, strict=True):
        line = lines[i]
        body = line.rstrip("\r\n")
        lead = body[: len(body) - len(body.lstrip())]
        lines[i] = lead + translation + line[len(body) :]
    return "".join(lines)


def _subtitles(data: bytes) -> list:
    import srt

    try:
        return list(srt.parse(_decode(data)))
    except srt.SRTParseError as error:
        raise FileError(f"not a SubRip file ({error})") from None


def _document(data: bytes):
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        return docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as error:
        raise FileError(f"not a .docx document ({error})") from None
    except Exception as error:  # zipfile.BadZipFile, lxml's XMLSyntaxError: a broken package
        raise FileError(f"not a .docx document ({type(error).__name__})") from None


def _paragraphs(document) -> list:
    """Every paragraph with text: body, tables (nested), headers and footers."""
    found = []

    def container(part) -> None:
        for paragraph in part.paragraphs:
            if paragraph.text.strip():
                found.append(paragraph)
        for table in getattr(part, "tables", []):
            for row in table.rows:
                for cell in row.cells:
                    container(cell)

    container(document)
    for section in document.sections:
        for part in (section.header, section.footer):
            if not part.is_linked_to_previous:
                container(part)
    unique, seen = [], set()
    for paragraph in found:  # merged table cells repeat
        if id(paragraph._p) not in seen:
            seen.add(id(paragraph._p))
            unique.append(paragraph)
    return unique


async def _translate_docx(data: bytes, translate: Translate) -> bytes:
    document = _document(data)
    paragraphs = _paragraphs(document)
    markup = [
        "".join(
            f'<span data-run="{i}">{html.escape(run.text, quote=False)}</span>'
            for i, run in enumerate(p.runs)
        )
        or html.escape(p.text, quote=False)
        for p in paragraphs
    ]
    done = await translate(markup, "html") if markup else []
    for paragraph, translation in zip(paragraphs, done, strict=True):
        _fill_runs(paragraph, translation)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _fill_runs(paragraph, translation: str) -> None:
    """Each run's text from its span in the translation; text outside spans joins the run
    before it (the first run, before any)."""
    runs = paragraph.runs
    if not runs:
        paragraph.text = lxml.html.fragment_fromstring(translation, create_parent="div").text_content()
        return
    root = lxml.html.fragment_fromstring(translation, create_parent="div")
    texts = [""] * len(runs)
    current = 0
    texts[0] += root.text or ""
    for span in root:
        index = span.get("data-run")
        if index is not None and index.isdigit() and int(index) < len(runs):
            current = int(index)
            texts[current] += span.text_content()
        else:
            texts[current] += span.text_content()
        texts[current] += span.tail or ""
    for run, text in zip(runs, texts, strict=True):
        run.text = text
