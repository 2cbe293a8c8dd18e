"""No 5xx for anything a client can send (issue 11, item 1).

A property-based test: schemathesis generates requests from the app's own OpenAPI document
(`/openapi.json` of a real `nmt serve`), schema-valid and schema-violating ones, for every
operation, and sends them over real HTTP to two servers with the tiny models: an open one and one
with API keys (each case then goes with the right key, a wrong key or none). Two thirds of the
schema-valid cases are steered to a served language pair and within the service's limits, so
they reach the models and the A/B store rather than stop at the first check. At least 1,000 cases
run, deterministically (derandomized, no example database); failures are collected, not raised,
so one run reports them all: server errors (a 5xx must also close the connection), and separately
responses that do not conform to the document (status codes, content types, bodies, headers).

Then: the LibreTranslate body fuzzed with hypothesis beyond its schema (JSON and form), the
document's completeness, hand-written regressions for the 500s the issue lists (each a 4xx JSON
naming the field), and the service's own 5xx closing the connection.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.serving.conftest import Server, start_server, stop_server

# Each fuzzed case decodes at most a few short sentences: the limits a client meets are small
# here (the generated values above them are refused, which is fuzzed as well).
FUZZ_LIMITS = {"max_chars": "200", "max_texts": "4", "max_length": "12", "max_beam_size": "3"}
# in-process cache both; failed authentications are not throttled here (after 10 a minute every
# request from the address would be a 429, and the fuzz would reach nothing else)
SERVERS = {"open": {}, "keyed": {"api_keys": "k1", "auth_failures_per_minute": "1000000"}}
EXAMPLES = 150  # per server, operation and generation mode; an operation without inputs gives 1 (or 3: auth)
MIN_CASES = 1000
CONFORMANCE_CHECKS = (
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=False,
)


@dataclass
class FuzzRun:
    cases: collections.Counter = field(default_factory=collections.Counter)  # (server, op, mode) -> n
    statuses: collections.Counter = field(default_factory=collections.Counter)  # (op, status) -> n
    server_errors: list[str] = field(default_factory=list)  # one reproduction each
    transport_errors: list[str] = field(default_factory=list)  # no response at all (counted too)
    # (operation, failure title) -> (count, one reproduction)
    nonconforming: dict[tuple[str, str], list] = field(default_factory=dict)
    translation_ids: list[str] = field(default_factory=list)  # of the current server, for feedback
    models: list[str] = field(default_factory=list)  # the current server's model names
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def summary(self) -> str:
        per_op = collections.Counter()
        for (_, op, _), n in self.cases.items():
            per_op[op] += n
        lines = [f"{self.total} cases in {self.seconds:.0f} s"]
        lines += [f"  {op}: {n} cases" for op, n in sorted(per_op.items())]
        lines += [f"  {op} -> {status}: {n}" for (op, status), n in sorted(self.statuses.items())]
        return "\n".join(lines)


def _reproduction(case, response, server: str, auth: str | None) -> str:
    request = response.request
    body = request.body if isinstance(request.body, (bytes, type(None))) else str(request.body).encode()
    text = response.content[:500].decode("utf-8", "replace")
    connection = response.headers.get("connection")
    return (
        f"[{server}] {request.method} {request.url} auth={auth!r}\n"
        f"  content-type: {request.headers.get('Content-Type')!r}  body: {(body or b'')[:500]!r}\n"
        f"  -> {response.status_code} connection={connection} {text}\n"
        f"  curl: {case.as_curl_command(headers=dict(request.headers))}"
    )


def _steer(case, run: FuzzRun, n: int) -> None:
    """Bend two thirds of the schema-valid cases towards what reaches the models and the A/B store
    (as a schemathesis `map_body` hook would): a served pair and model, options and texts within
    the service's limits, a translation id the server gave out."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "source" in body or "target" in body:
        body.update(source="en", target="de")
    if isinstance(body.get("model"), str) and run.models:
        body["model"] = run.models[n % len(run.models)]
    beam = _whole(body.get("beam_size"))
    if beam is not None:
        body["beam_size"] = beam = 1 + (beam - 1) % int(FUZZ_LIMITS["max_beam_size"])
    for name, limit in (("max_length", int(FUZZ_LIMITS["max_length"])), ("n_best", beam or 2)):
        value = _whole(body.get(name))
        if value is not None:
            body[name] = 1 + (value - 1) % limit
    alternatives = _whole(body.get("alternatives"))  # LibreTranslate: n-best = alternatives + 1
    if alternatives is not None:
        body["alternatives"] = alternatives % int(FUZZ_LIMITS["max_beam_size"])
    max_chars, max_texts = int(FUZZ_LIMITS["max_chars"]), int(FUZZ_LIMITS["max_texts"])
    for name in ("text", "q"):
        value = body.get(name)
        if isinstance(value, str):
            body[name] = value[:max_chars]
        elif isinstance(value, list):
            body[name] = [v[:max_chars] if isinstance(v, str) else v for v in value[:max_texts]]
    if "id" in body and "reference" in body and run.translation_ids:
        body["id"] = run.translation_ids[n % len(run.translation_ids)]


def _whole(value) -> int | None:
    """A JSON integer (schemathesis also writes them as 12.0), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _fuzz_server(server: Server, name: str, run: FuzzRun) -> None:
    run.translation_ids = []
    models = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer k1"}).json()
    run.models = [m["name"] for m in models["models"]]
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    auths = [None] if name == "open" else ["Bearer k1", "Bearer k1", None, "Bearer wrong-key"]
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            has_inputs = bool(operation.body) or any(True for _ in operation.iter_parameters())
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_inputs else [])
            for mode in modes:  # nothing to violate in an operation without inputs
                _fuzz_operation(server, name, run, session, operation, mode, auths, bool(operation.body))


def _fuzz_operation(server, name, run, session, operation, mode, auths, has_body: bool) -> None:
    """Up to EXAMPLES cases of one operation, schema-valid (positive) or not (negative); every
    response's failures are recorded, not raised, so one run reports them all."""

    @FUZZ_SETTINGS
    @given(
        case=operation.as_strategy(generation_mode=mode),
        auth=st.sampled_from(auths),
        steer=st.tuples(st.sampled_from([True, True, False]), st.integers(0, 2**16))
        if has_body
        else st.just((False, 0)),
    )
    def fuzz(case, auth, steer) -> None:
        if mode.is_positive and steer[0]:
            _steer(case, run, steer[1])
        headers = {"Authorization": auth} if auth else None
        try:
            response = case.call(base_url=server.url, session=session, headers=headers, timeout=60)
        except requests.RequestException as error:
            run.cases[(name, operation.label, mode.value)] += 1
            run.transport_errors.append(
                f"[{name}] {operation.label}: {error!r}\n  {case.as_curl_command(headers=headers)}"
            )
            return
        run.cases[(name, operation.label, mode.value)] += 1
        run.statuses[(operation.label, response.status_code)] += 1
        if operation.label == "POST /v1/translate" and response.status_code == 200:
            run.translation_ids += [item["id"] for item in response.json()["translations"]]
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
            if response.status_code >= 500 and "close" not in response.headers.get("connection", ""):
                raise AssertionError("a 5xx without Connection: close")
        except (FailureGroup, AssertionError):
            run.server_errors.append(_reproduction(case, response, name, auth))
        for check in CONFORMANCE_CHECKS:
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = (operation.label, f"{check.__name__}: {failure.title} ({response.status_code})")
                    example = _reproduction(case, response, name, auth) + f"\n  {failure.message}"
                    run.nonconforming.setdefault(key, [0, example])[0] += 1

    fuzz()


@pytest.fixture(scope="module")
def fuzz_run(models_dir: Path, tmp_path_factory) -> FuzzRun:
    run = FuzzRun()
    started = time.monotonic()
    for name, extra in SERVERS.items():
        server = start_server(models_dir, tmp_path_factory.mktemp(f"fuzz-{name}"), **FUZZ_LIMITS, **extra)
        try:
            _fuzz_server(server, name, run)
        finally:
            stop_server(server)
    run.seconds = time.monotonic() - started
    print("\nfuzz:", run.summary())
    return run


def test_fuzz_runs_at_least_1000_cases(fuzz_run: FuzzRun):
    assert fuzz_run.total >= MIN_CASES, fuzz_run.summary()


def test_fuzz_no_server_errors(fuzz_run: FuzzRun):
    errors = fuzz_run.server_errors
    assert not errors, f"{len(errors)} of {fuzz_run.total} cases got a 5xx:\n\n" + "\n\n".join(errors[:15])
    dropped = fuzz_run.transport_errors  # e.g. a kept-alive connection dropped after a 500
    assert not dropped, f"{len(dropped)} cases got no response:\n\n" + "\n\n".join(dropped[:10])


def test_fuzz_responses_conform_to_the_openapi_document(fuzz_run: FuzzRun):
    """Every status, content type, body and header a response has is the one the document gives."""
    report = [
        f"{op} | {title} ({count}x), e.g.\n{example}"
        for (op, title), (count, example) in sorted(fuzz_run.nonconforming.items())
    ]
    assert not report, f"{len(report)} kinds of non-conforming responses:\n\n" + "\n\n".join(report)


def test_openapi_document_is_complete(regression_server: Server):
    """What the issue asks the document to give: the error statuses with their JSON shape, the
    LibreTranslate body in JSON and as a form, the Bearer scheme, /metrics as text."""
    document = httpx.get(regression_server.url + "/openapi.json").json()
    paths = document["paths"]
    missing = []
    body = paths["/translate"]["post"].get("requestBody", {}).get("content", {})
    for media in ("application/json", "application/x-www-form-urlencoded"):
        if media not in body:
            missing.append(f"POST /translate: no {media} request body")
    schemes = document.get("components", {}).get("securitySchemes", {})
    if not any(s.get("type") == "http" and s.get("scheme", "").lower() == "bearer" for s in schemes.values()):
        missing.append("no Bearer security scheme")
    if "text/plain" not in paths["/metrics"]["get"]["responses"]["200"].get("content", {}):
        missing.append("GET /metrics: 200 is not documented as text/plain")
    expected_errors = {
        ("/v1/translate", "post"): {"400", "401", "413", "415", "422", "429"},
        ("/v1/feedback", "post"): {"401", "404", "413", "415", "422"},
        ("/translate", "post"): {"400", "401", "413", "415", "429"},
        ("/detect", "post"): {"400", "401", "413", "415", "429"},
    }
    for (path, method), statuses in expected_errors.items():
        responses = paths[path][method]["responses"]
        absent = sorted(statuses - set(responses))
        if absent:
            missing.append(f"{method.upper()} {path}: no {', '.join(absent)} response")
        for status in sorted(statuses & set(responses)):
            if "application/json" not in responses[status].get("content", {}):
                missing.append(f"{method.upper()} {path}: {status} has no JSON shape")
    assert not missing, "\n".join(missing)


# --- the 500s the issue lists, by hand ---------------------------------------------------------


@pytest.fixture(scope="module")
def regression_server(models_dir: Path, tmp_path_factory) -> Iterator[Server]:
    server = start_server(
        models_dir,
        tmp_path_factory.mktemp("regressions"),
        api_keys="k1",
        auth_failures_per_minute="1000000",  # the fuzz below sends wrong keys; see SERVERS
        max_length="12",
    )
    yield server
    stop_server(server)


AUTH = {"Authorization": "Bearer k1"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEEP = "[" * 10000 + "]" * 10000


def _raw_json(fields: dict, **raw: str) -> bytes:
    """`fields` as a JSON object the way a client sends it (json.dumps, ensure_ascii: a lone
    surrogate goes as the escape \\ud800), plus members whose JSON text is given as is."""
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()]
    members += [f"{json.dumps(k)}: {v}" for k, v in raw.items()]
    return ("{" + ", ".join(members) + "}").encode("ascii")


def _field_named(reply: httpx.Response) -> str | None:
    """The field an error names: `{"error": {"field"}}`, or LibreTranslate's "field: message"."""
    error = reply.json().get("error")
    if isinstance(error, dict):
        return error.get("field")
    if isinstance(error, str) and ":" in error:
        return error.split(":", 1)[0].strip()
    return None


def assert_client_error(reply: httpx.Response, fields: set[str], request: str) -> None:
    """A 4xx JSON that names one of `fields`; a 5xx fails, and must at least close the connection."""
    described = (
        f"{request} -> {reply.status_code} connection={reply.headers.get('connection')!r} {reply.text[:300]}"
    )
    if reply.status_code >= 500:
        assert "close" in reply.headers.get("connection", ""), "5xx without Connection: close: " + described
    assert 400 <= reply.status_code < 500, described
    assert reply.headers.get("content-type", "").startswith("application/json"), described
    assert _field_named(reply) in fields, described


LIBRETRANSLATE_CASES = [
    # (id, content type, body, headers, fields the error may name)
    ("json-alternatives--1", JSON, _raw_json({"q": "Hello.", "source": "en", "target": "de", "alternatives": -1}), AUTH, {"alternatives"}),
    ("json-alternatives-Infinity", JSON, _raw_json({"q": "Hello.", "source": "en", "target": "de"}, alternatives="Infinity"), AUTH, {"alternatives", "body"}),  # no JSON number: malformed JSON is right too
    ("json-alternatives-1e309", JSON, _raw_json({"q": "Hello.", "source": "en", "target": "de"}, alternatives="1e309"), AUTH, {"alternatives"}),
    ("form-alternatives--1", FORM, b"q=Hello.&source=en&target=de&alternatives=-1", AUTH, {"alternatives"}),
    ("form-alternatives-Infinity", FORM, b"q=Hello.&source=en&target=de&alternatives=Infinity", AUTH, {"alternatives"}),
    ("form-alternatives-1e309", FORM, b"q=Hello.&source=en&target=de&alternatives=1e309", AUTH, {"alternatives"}),
    ("json-surrogate-q", JSON, _raw_json({"q": "\ud800", "source": "en", "target": "de"}), AUTH, {"q", "body"}),
    ("json-surrogate-q-in-text", JSON, _raw_json({"q": "A man \ud800 runs.", "source": "en", "target": "de"}), AUTH, {"q", "body"}),
    ("json-surrogate-q-list", JSON, _raw_json({"q": ["Hello.", "\udfff"], "source": "en", "target": "de"}), AUTH, {"q", "q.1", "body"}),
    ("json-surrogate-api_key", JSON, _raw_json({"q": "Hello.", "source": "en", "target": "de", "api_key": "\ud800"}), {}, {"api_key", "Authorization", "body"}),
    ("json-nested-10000", JSON, DEEP.encode(), AUTH, {"body"}),
    ("json-nested-10000-in-q", JSON, _raw_json({"source": "en", "target": "de"}, q=DEEP), AUTH, {"q", "body"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content_type", "body", "headers", "fields"),
    [pytest.param(*case[1:], id=case[0]) for case in LIBRETRANSLATE_CASES],
)
def test_libretranslate_bad_input_is_a_4xx_naming_the_field(
    regression_server: Server, content_type, body, headers, fields
):
    with regression_server.client() as client:
        reply = client.post("/translate", content=body, headers={**content_type, **headers})
    assert_client_error(reply, fields, f"POST /translate {content_type} {body[:120]!r}")


NATIVE_CASES = [
    ("surrogate-text", _raw_json({"text": "\ud800", "source": "en", "target": "de"}), {"text", "body"}),
    ("surrogate-text-list", _raw_json({"text": ["Hi.", "\ud800"], "source": "en", "target": "de"}), {"text", "text.1", "body"}),
    ("surrogate-source", _raw_json({"text": "Hi.", "source": "e\ud800", "target": "de"}), {"source", "body"}),
    ("nested-10000", DEEP.encode(), {"body"}),
    ("nested-10000-in-text", _raw_json({"source": "en", "target": "de"}, text=DEEP), {"text", "body"}),
    ("beam-Infinity", _raw_json({"text": "Hi.", "source": "en", "target": "de"}, beam_size="Infinity"), {"beam_size", "body"}),
    ("length_penalty-1e309", _raw_json({"text": "Hi.", "source": "en", "target": "de"}, length_penalty="1e309"), {"length_penalty", "body"}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "fields"), [pytest.param(*case[1:], id=case[0]) for case in NATIVE_CASES])
def test_native_bad_input_is_a_4xx_naming_the_field(regression_server: Server, body, fields):
    with regression_server.client() as client:
        reply = client.post("/v1/translate", content=body, headers={**JSON, **AUTH})
    assert_client_error(reply, fields, f"POST /v1/translate {body[:120]!r}")


def test_feedback_with_surrogate_or_deep_json_is_a_4xx(regression_server: Server):
    with regression_server.client() as client:
        for body, fields in (
            (_raw_json({"id": "f" * 32, "reference": "\ud800"}), {"reference", "body"}),
            (DEEP.encode(), {"body"}),
        ):
            reply = client.post("/v1/feedback", content=body, headers={**JSON, **AUTH})
            assert_client_error(reply, fields, f"POST /v1/feedback {body[:80]!r}")


@pytest.mark.parametrize(
    "body", [b"q=%ED%A0%80&source=en&target=de", b"q=Hello.&source=en&target=de&api_key=%ED%A0%80"]
)
def test_libretranslate_form_with_an_encoded_surrogate_is_no_5xx(regression_server: Server, body):
    """A surrogate's UTF-8-like bytes in a form are no valid UTF-8: refused, or read with U+FFFD."""
    headers = {**FORM, **({} if b"api_key" in body else AUTH)}
    with regression_server.client() as client:
        reply = client.post("/translate", content=body, headers=headers)
    assert reply.status_code < 500, f"POST /translate {body!r} -> {reply.status_code} {reply.text[:300]}"
    if reply.status_code >= 400:
        assert_client_error(reply, {"q", "api_key", "Authorization", "body"}, f"POST /translate {body!r}")


# --- the LibreTranslate body, fuzzed whatever the document says of it ----------------------------

_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "\x00"])), max_size=40)
_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), _TEXT
)
_ANY = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_SENTENCES = st.sampled_from(["A man is riding a bike.", "Two dogs play in the snow.", "Hello. How are you?"])
_ALTERNATIVES = st.one_of(
    st.integers(-3, 3), st.sampled_from([2**63, -(2**63), 1e309, -1e309, float("nan"), "1", "-1", "1e309"])
)
_JUNK = {  # what each field may get wrong
    "q": st.one_of(_TEXT, st.lists(_TEXT, max_size=5), _ANY),
    "source": st.one_of(st.sampled_from(["de", "", "xx", "EN"]), _ANY),
    "target": st.one_of(st.sampled_from(["en", "", "xx", "DE"]), _ANY),
    "alternatives": st.one_of(_SCALAR, _ANY),
    "format": st.one_of(st.sampled_from(["html", ""]), _ANY),
    "api_key": st.one_of(st.sampled_from(["wrong", ""]), _TEXT, _ANY),
    "model": st.one_of(st.sampled_from(["nope", ""]), _ANY),
}


@st.composite
def libretranslate_fields(draw) -> dict:
    """A valid request, with none, one or two of its fields gone wrong: wholly random bodies are
    refused by the first check, and the 500s hide behind it."""
    fields = {
        "q": draw(st.one_of(_SENTENCES, st.lists(_SENTENCES, min_size=1, max_size=3))),
        "source": draw(st.sampled_from(["en", "auto"])),
        "target": "de",
    }
    optional = {
        "alternatives": _ALTERNATIVES,
        "format": st.just("text"),
        "api_key": st.just("k1"),
        "model": st.just("tiny-transformer"),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            fields[name] = draw(values)
    for name in draw(st.lists(st.sampled_from(sorted(_JUNK)), max_size=2, unique=True)):
        fields[name] = draw(_JUNK[name])
    return fields


def _form(fields: dict) -> bytes:
    """A urlencoded form as a client's bytes (a surrogate goes as its UTF-8-like bytes)."""
    pairs = []
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            text = item if isinstance(item, str) else json.dumps(item)
            pairs.append(
                quote(key.encode("utf-8", "surrogatepass"))
                + "="
                + quote(text.encode("utf-8", "surrogatepass"))
            )
    return "&".join(pairs).encode()


def test_fuzz_libretranslate_bodies_no_server_errors(regression_server: Server):
    """POST /translate with generated JSON and form bodies (any JSON value in any field, NaN and
    Infinity, surrogates, NULs, lists where strings go): never a 5xx; a 4xx is LibreTranslate's
    JSON error. 300 cases, deterministic."""
    failures: list[str] = []
    cases = collections.Counter()

    @settings(FUZZ_SETTINGS, max_examples=300)
    @given(
        fields=libretranslate_fields(),
        as_form=st.booleans(),
        auth=st.sampled_from([AUTH, AUTH, {}]),
    )
    def fuzz(client: httpx.Client, fields, as_form, auth) -> None:
        if as_form:
            body, content_type = _form(fields), FORM
        else:
            body, content_type = json.dumps(fields, allow_nan=True).encode(), JSON
        request = f"POST /translate {content_type['Content-Type']} auth={bool(auth)} {body[:300]!r}"
        try:
            reply = client.post("/translate", content=body, headers={**content_type, **auth})
        except httpx.HTTPError as error:  # e.g. a kept-alive connection dropped after a 500
            cases["no response"] += 1
            failures.append(f"no response: {request}\n  -> {error!r} (after the previous request)")
            return
        cases[reply.status_code] += 1
        problem = None
        if reply.status_code >= 500:
            problem = "5xx"
        elif reply.status_code >= 400:
            try:
                error = reply.json().get("error")
            except ValueError:
                error = None
            if not isinstance(error, str):
                problem = '4xx without LibreTranslate\'s {"error": "..."}'
        if problem:
            failures.append(
                f"{problem}: {request}\n  -> {reply.status_code} "
                f"connection={reply.headers.get('connection')!r} {reply.text[:200]}"
            )

    with regression_server.client() as client:
        fuzz(client)
    print(f"\nLibreTranslate fuzz: {sum(cases.values())} cases, statuses {dict(cases)}")
    assert sum(cases.values()) >= 300
    assert not failures, f"{len(failures)} of {sum(cases.values())} cases:\n\n" + "\n\n".join(failures[:15])


@pytest.mark.parametrize("junk", ["\u0000", "!!!", "x"], ids=["nul", "bangs", "one-char"])
def test_ab_report_after_a_normal_and_a_junk_reference(serve, junk):
    """One real and one junk reference for a variant: the report still answers 200."""
    server = serve(max_length="12")
    with server.client() as client:
        ids = []
        for text in ("A man is riding a bike.", "Two dogs play in the snow."):
            reply = client.post("/v1/translate", json={"text": text, "source": "en", "target": "de"})
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["translations"][0]["id"])
        for id, reference in zip(ids, ("Ein Mann fährt Fahrrad.", junk), strict=True):
            reply = client.post("/v1/feedback", json={"id": id, "reference": reference})
            # a junk reference may be refused (4xx naming it), never a 5xx
            if reply.status_code != 200:
                assert_client_error(reply, {"reference"}, f"POST /v1/feedback reference={reference!r}")
        report = client.get("/v1/ab/report")
    assert report.status_code == 200, (
        f"GET /v1/ab/report after references ['Ein Mann fährt Fahrrad.', {junk!r}] -> "
        f"{report.status_code} connection={report.headers.get('connection')!r} {report.text[:300]}"
    )


@pytest.mark.parametrize("cause", ["deadline", "redis-down"])
def test_a_5xx_closes_the_connection(serve, redis_server, cause):
    """The service's own 5xx (a server-side limit, not a bug): 504 when a translation misses its
    deadline, 503 when the A/B store's Redis is down; each says `Connection: close`, and the
    client's next request gets through on a new connection."""
    if cause == "deadline":
        server = serve(request_timeout_s="0.001", max_length="12")
        request = (
            "POST",
            "/v1/translate",
            {"text": "A boy climbs a tall tree.", "source": "en", "target": "de"},
        )
    else:
        server = serve(redis_url=redis_server.url, max_length="12")
        redis_server.stop()
        request = ("GET", "/v1/ab/report", None)
    method, path, body = request
    with server.client() as client:
        reply = client.request(method, path, json=body)
        described = f"{method} {path} -> {reply.status_code} {dict(reply.headers)} {reply.text[:300]}"
        assert reply.status_code == (504 if cause == "deadline" else 503), described
        assert reply.headers.get("connection") == "close", described
        assert reply.json()["error"]["message"], described
        if reply.status_code == 503:
            assert int(reply.headers["Retry-After"]) >= 1, described
        assert client.get("/health").status_code == 200
