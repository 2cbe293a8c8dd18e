"""nmt/markup.py: segments out of HTML, the translation back in with its markup, by the alignment
or proportionally without one; same tags, well-formed, verbatim parts untouched."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

import lxml.html
import pytest

from nmt.markup import parse

VOID = {"br", "img", "hr", "input", "meta", "link", "wbr", "area", "col", "embed", "source", "track", "param"}


class Balance(HTMLParser):
    """Well-formed: every non-void start tag closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"


def tags(html: str) -> Counter[str]:
    checker = Balance()
    checker.feed(html)
    checker.close()
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker.tags


def parsed_tags(html: str) -> Counter[str]:
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    return Counter(e.tag for e in root.iter() if isinstance(e.tag, str)) - Counter({"div": 1})


def identity(text: str) -> list[tuple[int, int]]:
    return [(i, i) for i in range(len(text.split()))]


def test_blocks_are_segments_and_inline_tags_follow_the_alignment():
    page = parse('<p>The <b>red</b> car is <a href="/x?a=1&amp;b=2">here</a>.</p><ul><li>One dog</li></ul>')
    assert page.segments == ["The red car is here.", "One dog"]
    # "Das Auto ist rot hier." with "red" (1) translated as "rot" (3): <b> moves onto it
    out = page.render(
        [("Das Auto ist rot hier.", [(0, 0), (2, 1), (3, 2), (1, 3), (4, 4)]), ("Ein Hund", identity("a b"))]
    )
    assert (
        out == '<p>Das Auto ist <b>rot</b> <a href="/x?a=1&amp;b=2">hier.</a></p><ul><li>Ein Hund</li></ul>'
    )


def test_verbatim_elements_are_left_as_they_are():
    html = (
        '<div>Run <code>ls -l</code> now <span class="notranslate">Acme</span> ok</div>'
        '<p translate="no">Keep me</p><script>var a = "text";</script><pre>  raw  text</pre><style>p{}</style>'
    )
    page = parse(html)
    assert page.segments == ["Run now ok"]
    out = page.render([("Lauf jetzt ok", identity("a b c"))])
    for part in (
        "<code>ls -l</code>",
        '<span class="notranslate">Acme</span>',
        '<p translate="no">Keep me</p>',
    ):
        assert part in out
    assert '<script>var a = "text";</script>' in out and "<pre>  raw  text</pre>" in out
    assert tags(out) == tags(html)


def test_nested_inline_elements_stay_nested_and_inside_their_parent():
    html = "<p>A <b>very <i>big</i> dog</b> runs</p>"
    page = parse(html)
    out = page.render([("Ein sehr großer Hund rennt", identity("a b c d e"))])
    assert out == "<p>Ein <b>sehr <i>großer</i> Hund</b> rennt</p>"


def test_without_an_alignment_tags_go_to_the_proportional_position_and_none_is_dropped():
    html = "<p>The <b>red</b> car <br>is <img src=a.png> <em>here</em></p>"
    page = parse(html)
    out = page.render([("Das rote Auto ist hier", None)])
    assert tags(out) == tags(html) == parsed_tags(html)
    assert out.startswith("<p>Das <b>rote</b> Auto")
    assert "<em>hier</em>" in out


def test_not_well_formed_html_is_translated_as_far_as_it_parses():
    html = "<p>An <b>open tag<p>Stray </i> close &amp; <div>unclosed"
    page = parse(html)
    assert page.segments == ["An open tag", "Stray close &", "unclosed"]
    out = page.render([(s.upper(), identity(s)) for s in page.segments])
    assert "AN <b>OPEN TAG</b>" in out and "&amp;" in out and "UNCLOSED" in out
    assert tags(out) == parsed_tags(html)  # what the parser read, and well-formed


def test_a_whole_document_keeps_its_doctype_head_and_body():
    html = "<!DOCTYPE html><html><head><title>Hi there</title></head><body><p>A dog.</p></body></html>"
    page = parse(html)
    assert page.segments == ["Hi there", "A dog."]
    out = page.render([("Hallo da", identity("a b")), ("Ein Hund.", identity("a b"))])
    assert (
        out.startswith("<!DOCTYPE html>") and "<title>Hallo da</title>" in out and "<p>Ein Hund.</p>" in out
    )
    assert tags(out) == tags(html)


@pytest.mark.parametrize(
    "html",
    [
        "<b>",
        "</p>",
        "<!-- only a comment -->",
        "<p>&nbsp;</p>",
        "<img src=x>",
        "<<>>",
        "<p>a<b>b</p>c</b>d",
        "<!DOCTYPE html>",
        "a\x00b\x18 <b>c\x0c</b>\ufffe",  # characters libxml2 refuses
    ],
)
def test_odd_markup_never_fails(html):
    page = parse(html)
    out = page.render([(s, identity(s)) for s in page.segments])
    tags(out)
