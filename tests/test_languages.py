import pytest

from nmt.languages import Direction, check_language, language_token


def test_language_token_names_the_target():
    assert language_token("de") == "<2de>"
    assert language_token("pt-BR") == "<2pt-BR>"


@pytest.mark.parametrize("bad", ["", "EN", "english", "e", "de_DE", "<2de>", None])
def test_bad_language_codes_are_refused(bad):
    with pytest.raises(ValueError):
        check_language(bad)


def test_direction_parses_prints_and_sorts():
    assert Direction.parse("en-de") == Direction("en", "de")
    assert str(Direction("fr", "en")) == "fr-en"
    assert sorted([Direction("fr", "en"), Direction("de", "en")])[0] == Direction("de", "en")


@pytest.mark.parametrize("bad", ["ende", "en-en", "en-", "-de"])
def test_bad_directions_are_refused(bad):
    with pytest.raises(ValueError):
        Direction.parse(bad)
