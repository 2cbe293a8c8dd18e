"""Small parts of the service: sentence splitting, settings, A/B draws, `nmt serve` errors."""

from __future__ import annotations

import collections
import shutil

import pytest
from pydantic import ValidationError

from serving.registry import weighted_choice
from serving.sentences import join_sentences, split_sentences
from serving.settings import Settings
from tests.conftest import assert_one_line_error, run_nmt


@pytest.mark.parametrize(
    ("text", "sentences", "separators"),
    [
        ("A man runs.", ["A man runs."], []),
        ("A man runs. A dog barks!  Why?", ["A man runs.", "A dog barks!", "Why?"], [" ", " "]),
        ("First line\n\nSecond line", ["First line", "Second line"], ["\n\n"]),
        ("It costs 3.50 euros. Cheap.", ["It costs 3.50 euros.", "Cheap."], [" "]),
        ("lower. case stays together", ["lower. case stays together"], []),
        ("  padded  ", ["padded"], []),
    ],
)
def test_split_and_join(text, sentences, separators):
    assert split_sentences(text) == (sentences, separators)
    # joined back, the text keeps its paragraph breaks; any other run of spaces becomes one space
    expected = text.strip() if "\n" in text else " ".join(text.split())
    assert join_sentences(sentences, separators) == expected


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("NMT_API_KEYS", "a, b ,c")
    monkeypatch.setenv("NMT_AB_SPLIT", '{"en-de": {"x": 70, "y": 30}}')
    monkeypatch.setenv("NMT_BATCH_MAX_WAIT_MS", "2.5")
    settings = Settings()
    assert settings.api_keys == ["a", "b", "c"]
    assert settings.ab_split == {"en-de": {"x": 70.0, "y": 30.0}}
    assert settings.batch_max_wait_ms == 2.5 and settings.backend == "auto" and settings.redis_url is None
    monkeypatch.setenv("NMT_AB_SPLIT", '{"en-de": {"x": -1}}')
    with pytest.raises(ValidationError):
        Settings()


def test_weighted_choice_is_proportional_and_sticky():
    weights = {"a": 80, "b": 20}
    drawn = collections.Counter(weighted_choice(weights, "en-de", f"c{i}") for i in range(2000))
    assert 1500 <= drawn["a"] <= 1700
    assert len({weighted_choice(weights, "en-de", "same") for _ in range(20)}) == 1
    assert weighted_choice({"only": 1}, "en-de", None) == "only"


def test_serve_refuses_bad_settings_in_one_line(tmp_path):
    missing = run_nmt("serve", "--models", str(tmp_path / "none"), check=False)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "models folder not found" in missing.stderr
    empty = run_nmt("serve", "--models", str(tmp_path), check=False)
    assert empty.returncode == 1 and "no model bundles" in empty.stderr
    bad = run_nmt("serve", "--models", str(tmp_path), check=False, NMT_BACKEND="tensorflow")
    assert bad.returncode == 1 and bad.stderr.startswith("nmt serve: error: NMT_BACKEND")


def test_serve_refuses_two_bundles_of_one_name_naming_both_folders(trained_bundles, tmp_path):
    for copy in ("first", "second"):
        shutil.copytree(trained_bundles["transformer"], tmp_path / copy)
    result = run_nmt("serve", "--models", str(tmp_path), check=False)
    assert_one_line_error(result, str(tmp_path / "first"), str(tmp_path / "second"), "both named")


def test_alternatives_widen_a_greedy_models_beam():
    """A LibreTranslate client asking a greedy bundle (a distilled student) for alternatives gets
    them: the beam grows to the n-best asked for, unless the request sets a beam itself."""
    from types import SimpleNamespace

    from nmt.config import SearchConfig
    from serving.errors import ApiError
    from serving.translation import search_options

    entry = SimpleNamespace(bundle=SimpleNamespace(search=SearchConfig(beam_size=1)))
    settings = Settings()
    assert search_options(entry, settings).beam_size == 1
    widened = search_options(entry, settings, n_best=3)
    assert (widened.beam_size, widened.n_best) == (3, 3)
    with pytest.raises(ApiError) as refused:
        search_options(entry, settings, beam_size=2, n_best=3)
    assert refused.value.field == "n_best"


def test_a_requests_deadline_covers_every_decode_it_makes():
    """The repair pass of a request (its degenerate translations decoded again) gets what is left
    of the request's deadline, not a fresh timeout: a request is answered 504 once its deadline
    passes, however many decodes it makes, and the decode still running is cancelled."""
    import asyncio
    import time

    from serving.errors import ApiError
    from serving.translation import Caller, _within_deadline

    cancelled = []

    async def work(seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(seconds)
            raise
        return "done"

    async def request() -> float:
        caller = Caller("test", deadline=time.monotonic() + 0.3)
        assert await _within_deadline(work(0.2), 0.3, caller) == "done"
        started = time.monotonic()
        with pytest.raises(ApiError) as late:
            await _within_deadline(work(0.2), 0.3, caller)
        assert (late.value.status, late.value.type) == (504, "timeout")
        return time.monotonic() - started

    assert asyncio.run(request()) < 0.2
    assert cancelled == [0.2]
    # without a deadline (a stream's sentences) each decode gets the whole timeout
    assert asyncio.run(_within_deadline(work(0.2), 0.3, Caller("test"))) == "done"
