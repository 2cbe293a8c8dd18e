"""Issue 14 items 3 and 4 over real HTTP (nmt serve under uvicorn, the shipped models): HTML on
both translate endpoints, files through /translate_file and /download_file, glossaries (in the
request and stored per key), do-not-translate spans, numbers and URLs, and their bad input."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import docx
import pytest
import srt

from tests.serving.conftest import Server, start_server, stop_server
from tests.test_markup import tags

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer k1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The shipped Transformer (with attention) and plain LSTM (without), keys k1 and k2."""
    folder = tmp_path_factory.mktemp("shipped")
    for name in ("transformer-en-de", "lstm-en-de"):
        (folder / name).symlink_to(ROOT / "models" / name)
    server = start_server(
        folder,
        tmp_path_factory.mktemp("markup"),
        backend="torch",  # the LSTM has no ONNX export, and the service must not write into models/
        api_keys="k1,k2",
        max_glossary_terms="5",
        max_file_bytes="60000",
        max_chars="2000",
    )
    yield server
    stop_server(server)


def translate(client, text: str, model: str = "transformer-en-de", **fields) -> dict:
    body = {"text": text, "source": "en", "target": "de", "model": model, **fields}
    reply = client.post("/v1/translate", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()["translations"][0]


@pytest.mark.parametrize("model", ["transformer-en-de", "lstm-en-de"])
def test_html_keeps_its_markup_on_both_endpoints(server, model):
    html = (
        '<p>A man in a <b>red</b> shirt is <a href="/x?a=1&amp;b=2">riding a bike</a>.</p>'
        '<ul><li>Two dogs play.</li><li translate="no">Do not touch</li></ul>'
        "<script>var s = 'a dog';</script>"
    )
    with server.client() as client:
        out = translate(client, html, model, format="html")["text"]
        print(f"{model}: {out}")
        assert tags(out) == tags(html)
        assert '<a href="/x?a=1&amp;b=2">' in out and '<li translate="no">Do not touch</li>' in out
        assert "<script>var s = 'a dog';</script>" in out and "Mann" in out and "Hunde" in out
        body = {"q": html, "source": "en", "target": "de", "format": "html", "model": model}
        libre = client.post("/translate", json=body, headers=AUTH)
        assert libre.status_code == 200 and libre.json()["translatedText"] == out


def test_html_moves_a_bold_word_by_the_alignment(server):
    with server.client() as client:
        out = translate(client, "<p>A <b>dog</b> runs on the grass.</p>", format="html")["text"]
    assert re.search(r"<b>Hund</b>", out), out


def test_html_that_is_not_well_formed_is_translated_as_far_as_it_parses(server):
    with server.client() as client:
        out = translate(client, "<p>A man <b>sleeps<p>A dog </i> runs <div", format="html")["text"]
    assert "Mann" in out and "Hund" in out and tags(out)["b"] == 1


def test_numbers_urls_and_emails_are_copied_verbatim(server):
    text = "The concert starts at 7:30 pm and tickets cost 25 euros, see https://example.org/t?id=7 or mail a.b@example.com."
    with server.client() as client:
        for model in ("transformer-en-de", "lstm-en-de"):
            out = translate(client, text, model)["text"]
            print(f"{model}: {out}")
            for span in ("7:30", "25", "https://example.org/t?id=7", "a.b@example.com"):
                assert span in out, (model, out)


def test_glossary_and_do_not_translate_in_the_request(server):
    with server.client() as client:
        plain = translate(client, "A dog runs to the man.")
        forced = translate(
            client, "A dog runs to the man.", glossary={"dog": "Vierbeiner"}, do_not_translate=["man"]
        )
        assert "Vierbeiner" not in plain["text"] and "Vierbeiner" in forced["text"], forced
        assert "man" in forced["text"].split(" ")[-1], forced
        aligned = translate(client, "A dog runs.", glossary={"dog": "Vierbeiner"}, return_alignment=True)
        assert len(aligned["alignment"]) == len(aligned["text"].split())
        # a text no term applies to: the model's own translation, unchanged
        assert (
            translate(client, "A cat sleeps.", glossary={"dog": "Vierbeiner"})["text"]
            == translate(client, "A cat sleeps.")["text"]
        )


def test_glossary_stored_per_key_and_merged_under_the_request(server):
    with server.client() as client:
        k2 = {"Authorization": "Bearer k2"}
        put = client.put(
            "/v1/glossary", json={"glossary": {"dog": "Vierbeiner", "man": "Herr"}}, headers=AUTH
        )
        assert put.status_code == 200, put.text
        assert client.get("/v1/glossary", headers=AUTH).json() == {
            "glossary": {"dog": "Vierbeiner", "man": "Herr"}
        }
        assert client.get("/v1/glossary", headers=k2).json() == {"glossary": {}}
        out = translate(client, "A dog and a man.")["text"]
        assert "Vierbeiner" in out and "Herr" in out, out
        out = translate(client, "A dog and a man.", glossary={"dog": "Köter"})["text"]
        assert "Köter" in out and "Herr" in out, out  # the request's entry wins, the rest applies
        libre = client.post(
            "/translate", json={"q": "A dog.", "source": "en", "target": "de", "api_key": "k1"}
        )
        assert "Vierbeiner" in libre.json()["translatedText"]
        other = client.post(
            "/v1/translate", json={"text": "A dog.", "source": "en", "target": "de"}, headers=k2
        )
        assert "Vierbeiner" not in other.json()["translations"][0]["text"]
        assert client.delete("/v1/glossary", headers=AUTH).status_code == 204
        assert client.get("/v1/glossary", headers=AUTH).json() == {"glossary": {}}
        assert client.get("/v1/glossary").status_code == 401


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"glossary": {"": "x"}}, "glossary."),
        ({"glossary": {"dog": " "}}, "glossary.dog"),
        ({"glossary": {"dog": 5}}, "glossary.dog"),
        ({"glossary": {f"w{i}": "x" for i in range(6)}}, "glossary"),
        ({"glossary": ["dog"]}, "glossary"),
        ({"do_not_translate": [""]}, "do_not_translate.0"),
        ({"do_not_translate": "dog"}, "do_not_translate"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_terms_are_a_422_naming_the_field(server, fields, field):
    with server.client() as client:
        body = {"text": "A dog.", "source": "en", "target": "de", **fields}
        reply = client.post("/v1/translate", json=body, headers=AUTH)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == field
        if "glossary" in fields:
            stored = client.put("/v1/glossary", json={"glossary": fields["glossary"]}, headers=AUTH)
            assert stored.status_code == 422 and stored.json()["error"]["field"] == field


def _docx() -> bytes:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "A dog in the snow."
    paragraph = document.add_paragraph("A man with a ")
    paragraph.add_run("red").bold = True
    paragraph.add_run(" hat is walking.")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Two children play."
    table.cell(0, 1).text = "A woman sings."
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _translate_file(client, name: str, data: bytes, **form) -> tuple[int, dict]:
    fields = {"source": "en", "target": "de", "api_key": "k1", "model": "transformer-en-de", **form}
    reply = client.post("/translate_file", files={"file": (name, data)}, data=fields)
    return reply.status_code, reply.json()


def _download(client, url: str) -> bytes:
    assert url.startswith(str(client.base_url)) and "/download_file/" in url
    reply = client.get(url)
    assert reply.status_code == 200, reply.text
    return reply.content


def test_files_txt_html_srt_docx_end_to_end(server):
    subtitles = "1\n00:00:01,000 --> 00:00:02,500\nA man is cooking.\n\n2\n00:00:03,000 --> 00:00:04,000\nTwo dogs\nplay in the snow.\n\n"
    with server.client() as client:
        status, body = _translate_file(client, "notes.txt", b"A man is cooking.\n\nTwo dogs play.\n")
        assert status == 200, body
        lines = _download(client, body["translatedFileUrl"]).decode().split("\n")
        assert len(lines) == 4 and lines[1] == "" and "Mann" in lines[0] and "Hunde" in lines[2], lines

        status, body = _translate_file(client, "page.html", b"<p>A <b>dog</b> runs.</p><p>A man sleeps.</p>")
        page = _download(client, body["translatedFileUrl"]).decode()
        assert tags(page) == {"p": 2, "b": 1} and "Mann" in page

        status, body = _translate_file(client, "film.srt", subtitles.encode())
        parsed = list(srt.parse(_download(client, body["translatedFileUrl"]).decode()))
        assert [(s.index, s.start, s.end) for s in parsed] == [
            (s.index, s.start, s.end) for s in srt.parse(subtitles)
        ]
        assert "Mann" in parsed[0].content and "Hunde" in parsed[1].content

        status, body = _translate_file(client, "letter.docx", _docx())
        assert status == 200, body
        reply = client.get(body["translatedFileUrl"])
        assert 'filename="letter.docx"' in reply.headers["content-disposition"]
        document = docx.Document(io.BytesIO(reply.content))
        paragraph = document.paragraphs[0]
        print("docx:", [(r.text, r.bold) for r in paragraph.runs])
        assert "Mann" in paragraph.text and len(paragraph.runs) == 3
        assert paragraph.runs[1].bold and "rot" in paragraph.runs[1].text
        cells = [c.text for c in document.tables[0].rows[0].cells]
        assert "Kinder" in cells[0] and "Frau" in cells[1], cells
        assert "Hund" in document.sections[0].header.paragraphs[0].text


def test_file_errors_are_json_naming_the_file(server):
    with server.client() as client:
        status, body = _translate_file(client, "paper.pdf", b"%PDF-1.4")
        assert status == 415 and body["error"].startswith("file:"), body
        status, body = _translate_file(client, "big.txt", b"A dog.\n" * 9000)
        assert status == 413 and body["error"].startswith("file:"), body
        status, body = _translate_file(client, "long.txt", b"A dog runs.\n" * 190)
        assert status == 400 and "characters" in body["error"], body
        status, body = _translate_file(client, "broken.docx", b"PK not a zip")
        assert status == 400 and body["error"].startswith("file:"), body
        status, body = _translate_file(client, "latin1.txt", "Caf\u00e9".encode("latin-1"))
        assert status == 400 and "UTF-8" in body["error"], body
        status, body = _translate_file(client, "notes.txt", b"A dog.", api_key="wrong")
        assert status == 401, body
        for id in ("0" * 32 + ".notes.txt", "..%2F..%2Fetc%2Fpasswd", "../../serving/main.py"):
            reply = client.get(f"/download_file/{id}")
            assert reply.status_code == 404 and "error" in reply.json(), (id, reply.text)


def test_glossary_and_files_are_kept_in_redis(redis_server, tmp_path):
    """With Redis, a stored glossary and a translated file are there for every replica: a second
    server on the same Redis reads what the first stored."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "transformer-en-de").symlink_to(ROOT / "models" / "transformer-en-de")
    servers = [
        start_server(folder, tmp_path, backend="torch", api_keys="k1", redis_url=redis_server.url)
        for _ in range(2)
    ]
    try:
        with servers[0].client() as first, servers[1].client() as second:
            assert (
                first.put("/v1/glossary", json={"glossary": {"dog": "Vierbeiner"}}, headers=AUTH).status_code
                == 200
            )
            assert second.get("/v1/glossary", headers=AUTH).json() == {"glossary": {"dog": "Vierbeiner"}}
            assert "Vierbeiner" in translate(second, "A dog runs.")["text"]
            status, body = _translate_file(first, "notes.txt", b"A man is cooking.\n")
            assert status == 200, body
            url = body["translatedFileUrl"].replace(servers[0].url, servers[1].url)
            assert "Mann" in second.get(url).text
            assert second.delete("/v1/glossary", headers=AUTH).status_code == 204
            assert first.get("/v1/glossary", headers=AUTH).json() == {"glossary": {}}
            redis_server.stop()  # an outage: translations go on without stored glossaries
            assert "Hund" in translate(first, "A dog sleeps.")["text"]
            assert first.get("/v1/glossary", headers=AUTH).status_code == 503
    finally:
        for server in servers:
            stop_server(server)
