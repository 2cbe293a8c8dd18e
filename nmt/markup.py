"""HTML in, HTML out: the text of a page translated, its markup kept.

`parse(html)` cuts a page into segments, the units the model translates: a segment is the text of
a block element (p, div, li, td, h1, ...) with its inline elements (b, i, a, em, strong, span,
...), read as one sentence-like text with its words separated by single spaces. `render` puts the
translations back:
- block elements are translated as separate segments;
- inline elements that span words move onto the target words aligned to their source words
  (`nmt.alignment`: each target word links to one source word): an element covers the target
  words from the first to the last one aligned to any of its words, clipped to its parent's words
  and kept from overlapping its siblings;
- elements without words (br, img, an empty span, comments) and elements left verbatim go before
  the first target word aligned to the source word after them;
- left verbatim, content and all: script, style, code, pre, textarea, svg, math, template, and any
  element with translate="no" or class="notranslate";
- attributes are untouched (control characters, which libxml2 cannot hold, become U+FFFD, as
  HTML's parsing rules do with NULL); entities are read as the characters they stand for and written back
  by the serializer (&amp; &lt; &gt; stay escaped; &nbsp; between words becomes a space).
Without an alignment (a model without attention, the plain LSTM) an element's words are placed
proportionally: source words [i, j) of n become target words [round(i m / n), round(j m / n)) of
m, at least one. No tag is ever dropped: the output has the same multiset of tags as the parsed
input, and is well-formed (lxml serializes a tree).

The parser is lxml's HTML parser (libxml2): fast, maintained, already a dependency of the
toolchain, and it recovers from markup that is not well-formed (unclosed or stray tags) as
browsers do, so such input is translated as far as it parses. html5lib parses like a browser too
but is pure Python and several times slower; BeautifulSoup is a layer over either.
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass, field

import lxml.html
from lxml import etree

from nmt.alignment import Alignment

INLINE = frozenset(
    [
        "a",
        "abbr",
        "acronym",
        "b",
        "bdi",
        "bdo",
        "big",
        "cite",
        "code",
        "data",
        "del",
        "dfn",
        "em",
        "font",
        "i",
        "ins",
        "kbd",
        "label",
        "mark",
        "q",
        "rp",
        "rt",
        "ruby",
        "s",
        "samp",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "time",
        "tt",
        "u",
        "var",
    ]
)
VOID = frozenset(
    ["area", "br", "embed", "hr", "img", "input", "wbr", "source", "track", "col", "param", "meta", "link"]
)
VERBATIM = frozenset(
    [
        "script",
        "style",
        "code",
        "pre",
        "textarea",
        "svg",
        "math",
        "template",
        "kbd",
        "samp",
        "var",
        "noscript",
    ]
)
_WORD = re.compile(r"\S+")
# characters libxml2 refuses (XML 1.0 excludes them; HTML's parsing rules replace NULL by U+FFFD)
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_DOCUMENT = re.compile(r"\s*(<!--.*?-->\s*)*<(!doctype|html)", re.IGNORECASE | re.DOTALL)


def verbatim(element: etree._Element) -> bool:
    """Left as it is: not an element (a comment), a verbatim tag, translate="no", notranslate."""
    if not isinstance(element.tag, str):
        return True
    return (
        element.tag.lower() in VERBATIM
        or element.get("translate", "").lower() == "no"
        or "notranslate" in element.get("class", "").split()
    )


def _atom(element: etree._Element) -> bool:
    """Placed as a whole within the text around it: void, comment, or verbatim inline."""
    if not isinstance(element.tag, str):
        return True
    tag = element.tag.lower()
    return tag in VOID or (
        verbatim(element) and (tag in INLINE or tag in VERBATIM - {"pre", "script", "style"})
    )


@dataclass
class _Run:
    """The text of one block between block children: `container`'s text (anchor None) or the
    tail of its child `anchor`, with the inline elements and atoms up to the next block."""

    container: etree._Element
    anchor: etree._Element | None
    chars: list[str] = field(default_factory=list)
    paths: list[tuple[etree._Element, ...]] = field(default_factory=list)  # per character
    elements: list[tuple[etree._Element, etree._Element | None, int]] = field(default_factory=list)
    atoms: list[tuple[etree._Element, etree._Element | None, int]] = field(default_factory=list)
    children: list[etree._Element] = field(default_factory=list)  # the container's, in this run
    spaced_after: set[etree._Element] = field(default_factory=set)  # atoms with whitespace after
    words: list[str] = field(default_factory=list)
    word_paths: list[tuple[etree._Element, ...]] = field(default_factory=list)
    lead: str = ""
    trail: str = ""

    def text(self, text: str | None, path: tuple[etree._Element, ...]) -> None:
        if text:
            self.chars.append(text)
            self.paths += [path] * len(text)

    def atom(self, element: etree._Element, parent: etree._Element | None) -> None:
        """An element placed whole; a line break also separates the words around it."""
        self.atoms.append((element, parent, self.offset))
        if (element.tail or "")[:1].isspace():
            self.spaced_after.add(element)
        if isinstance(element.tag, str) and element.tag.lower() == "br":
            self.text(" ", self.paths[-1] if self.paths else ())

    @property
    def offset(self) -> int:
        return len(self.paths)

    def inline(self, element: etree._Element, parent: etree._Element | None, path: tuple) -> None:
        self.elements.append((element, parent, self.offset))
        inner = (*path, element)
        self.text(element.text, inner)
        for child in element:
            if verbatim(child) or not isinstance(child.tag, str) or child.tag.lower() in VOID:
                self.atom(child, element)
            else:
                self.inline(child, element, inner)
            self.text(child.tail, inner)

    def finish(self) -> bool:
        """Words from the text; False if there are none (the run is then left untouched)."""
        text = "".join(self.chars)
        matches = list(_WORD.finditer(text))
        self.words = [m.group() for m in matches]
        self.word_paths = [self.paths[m.start()] for m in matches]
        self._starts = [m.start() for m in matches]
        self.lead = text[: len(text) - len(text.lstrip())]
        self.trail = text[len(text.rstrip()) :] if text.strip() else ""
        return bool(self.words)

    def word_at(self, offset: int) -> int:
        """The number of words that start before character `offset`."""
        return sum(start < offset for start in self._starts)


class Document:
    """A parsed page: `segments` to translate, then `render` with their translations."""

    def __init__(self, markup: str) -> None:
        self.markup = markup
        markup = _UNSAFE.sub("\ufffd", markup)
        self.is_document = bool(_DOCUMENT.match(markup))
        self.runs: list[_Run] = []
        try:
            if self.is_document:
                self.root = lxml.html.document_fromstring(markup)
            else:
                self.root = lxml.html.fragment_fromstring(markup, create_parent="div")
        except etree.ParserError:  # a document with nothing in it (a doctype alone)
            self.root = None
            return
        self._collect(self.root)

    @property
    def segments(self) -> list[str]:
        """The texts to translate, one per run: its words joined by single spaces."""
        return [" ".join(run.words) for run in self.runs]

    def _collect(self, container: etree._Element) -> None:
        run = _Run(container, None)
        run.text(container.text, ())
        for child in list(container):
            if _atom(child):
                run.atom(child, None)
                run.children.append(child)
            elif isinstance(child.tag, str) and child.tag.lower() in INLINE and not verbatim(child):
                run.inline(child, None, ())
                run.children.append(child)
            else:  # a block: its own segments (unless verbatim); its tail starts a new run
                self._keep(run)
                if not verbatim(child):
                    self._collect(child)
                run = _Run(container, child)
            run.text(child.tail, ())
        self._keep(run)

    def _keep(self, run: _Run) -> None:
        if run.finish():
            self.runs.append(run)

    def render(self, translations: list[tuple[str, Alignment | None]]) -> str:
        """The page with each segment's translation (and its alignment, None without one)."""
        if len(translations) != len(self.runs):
            raise ValueError(f"{len(self.runs)} segments, {len(translations)} translations")
        if self.root is None:
            return self.markup
        for run, (text, alignment) in zip(self.runs, translations, strict=True):
            _render(run, text.split(), alignment)
        if self.is_document:
            doctype = self.root.getroottree().docinfo.doctype
            return lxml.html.tostring(self.root, encoding="unicode", doctype=doctype or None)
        out = [htmllib.escape(self.root.text or "", quote=False)]
        out += [lxml.html.tostring(child, encoding="unicode", with_tail=True) for child in self.root]
        return "".join(out)


def parse(markup: str) -> Document:
    return Document(markup)


def _render(run: _Run, target: list[str], alignment: Alignment | None) -> None:
    n, m = len(run.words), len(target)
    linked: dict[int, list[int]] = {}
    for src, tgt in alignment or []:
        if 0 <= src < n and 0 <= tgt < m:
            linked.setdefault(src, []).append(tgt)

    def proportional(k: int) -> int:
        return min(m, round(k * m / n))

    def position(k: int) -> int:
        """The target position of source boundary k (before source word k)."""
        if alignment is not None:
            if k < n and linked.get(k):
                return min(linked[k])
            before = [t for i in range(k) for t in linked.get(i, [])]
            if before:
                return max(before) + 1
        return proportional(k)

    # source words of each element, and its target range
    ranges: dict[etree._Element, tuple[int, int]] = {}
    children: dict[etree._Element | None, list[etree._Element]] = {}
    for element, parent, start in run.elements:
        children.setdefault(parent, []).append(element)
        words = [i for i, path in enumerate(run.word_paths) if element in path]
        if not words:
            at = position(run.word_at(start))
            ranges[element] = (at, at)
            continue
        s0, s1 = words[0], words[-1] + 1
        hits = [t for i in range(s0, s1) for t in linked.get(i, [])]
        if hits:
            ranges[element] = (min(hits), max(hits) + 1)
        else:
            lo = proportional(s0)
            ranges[element] = (lo, min(m, max(lo + 1, proportional(s1))))
    # nest: within the parent, siblings in target order without overlap
    bounds: dict[etree._Element | None, tuple[int, int]] = {None: (0, m)}
    for parent in [None, *[e for e, _, _ in run.elements]]:
        if parent not in children or parent not in bounds:
            continue
        low, high = bounds[parent]
        placed = sorted(children[parent], key=lambda e: ranges[e])
        end = low
        for element in placed:
            lo, hi = ranges[element]
            lo = min(max(lo, end, low), high)
            hi = min(max(hi, lo), high)
            bounds[element] = (lo, hi)
            end = hi
    atoms: dict[etree._Element | None, list[tuple[etree._Element, int]]] = {}
    for atom, parent, start in run.atoms:
        low, high = bounds.get(parent, (0, m))
        atoms.setdefault(parent, []).append((atom, min(max(position(run.word_at(start)), low), high)))

    # detach the run's nodes, then write the translation back as a stream of events
    for child in run.children:
        run.container.remove(child)
    for element, _, _ in run.elements:
        for child in list(element):
            element.remove(child)
        element.text = element.tail = None
    for atom, _, _ in run.atoms:
        atom.tail = None
    if run.anchor is None:
        run.container.text = None
        index = 0
    else:
        run.anchor.tail = None
        index = list(run.container).index(run.anchor) + 1
    writer = _Writer(run.container, index, run.anchor)
    writer.text(run.lead)
    spaced: set[int] = set()

    def space(i: int) -> None:
        if 0 < i < m and i not in spaced:
            spaced.add(i)
            writer.text(" ")

    def emit(parent: etree._Element | None, lo: int, hi: int) -> None:
        items = [(bounds[e][0], 1, e) for e in children.get(parent, [])]
        items += [(at, 0, a) for a, at in atoms.get(parent, [])]
        cursor = lo
        for start, is_element, node in sorted(items, key=lambda x: (x[0], x[1])):
            for i in range(cursor, max(cursor, start)):
                space(i)
                writer.text(target[i])
            cursor = max(cursor, start)
            space(start)
            if is_element:
                writer.open(node)
                emit(node, *bounds[node])
                writer.close()
                cursor = max(cursor, bounds[node][1])
            else:
                writer.add(node)
                if node in run.spaced_after and start < m:
                    writer.text(" ")
                    spaced.add(start)
        for i in range(cursor, hi):
            space(i)
            writer.text(target[i])

    emit(None, 0, m)
    writer.text(run.trail)


class _Writer:
    """Appends text and elements to a tree in document order."""

    def __init__(self, parent: etree._Element, index: int, last: etree._Element | None) -> None:
        self.stack = [[parent, index, last]]

    def text(self, text: str) -> None:
        if not text:
            return
        parent, _, last = self.stack[-1]
        if last is None:
            parent.text = (parent.text or "") + text
        else:
            last.tail = (last.tail or "") + text

    def add(self, element: etree._Element) -> None:
        frame = self.stack[-1]
        frame[0].insert(frame[1], element)
        frame[1] += 1
        frame[2] = element

    def open(self, element: etree._Element) -> None:
        self.add(element)
        self.stack.append([element, 0, None])

    def close(self) -> None:
        self.stack.pop()
