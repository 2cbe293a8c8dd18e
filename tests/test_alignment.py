"""Word alignments from subword attention: on hand-made matrices, then from real models' translations."""

from __future__ import annotations

import pytest
import torch

from nmt.alignment import offset, pharaoh, word_alignment, word_ids
from nmt.bundle import load_bundle
from nmt.errors import NoAttention
from nmt.translator import Translator
from tests.conftest import SHIPPED_MODELS


def test_pieces_merge_into_words_at_word_starts():
    assert word_ids(["▁A", "▁do", "g", "▁runs", "."]) == [0, 1, 1, 2, 2]
    assert word_ids(["ab", "c", "▁d"]) == [0, 0, 1]  # the first piece starts a word, marked or not
    assert word_ids([]) == []


@pytest.mark.parametrize(
    "pieces",
    [
        ["▁A", "▁dog", "▁runs", "▁", "."],
        ["▁", "(", "a", "▁b"],
        ["▁", "▁", "x", "▁"],
        ["▁foo", "<unk>", "bar", "<unk>", "<unk>", "▁baz"],
        ["<unk>", "▁a"],
        ["▁"],
        ["▁Holz", "haus", "haus", "."],
    ],
)
def test_words_are_the_whitespace_tokens_of_the_decoded_text(pieces):
    """What SentencePiece's decoding gives, split at whitespace: a lone "▁" joins the word after
    it, UNK (decoded " ⁇ ") is a word of its own."""
    text = "".join(" ⁇ " if piece == "<unk>" else piece for piece in pieces).replace("▁", " ")
    words = text.split()
    ids = word_ids(pieces)
    assert max(ids, default=-1) == len(words) - 1
    for i, word in enumerate(words):
        spelled = "".join(p.replace("<unk>", "⁇") for p, w in zip(pieces, ids, strict=True) if w == i)
        assert spelled.replace("▁", "") == word


def test_each_target_word_links_to_the_source_word_with_the_most_attention():
    src = ["▁A", "▁dog", "▁runs"]
    tgt = ["▁Ein", "▁Hund", "▁läuft"]
    attention = [
        [0.1, 0.8, 0.1],
        [0.7, 0.2, 0.1],
        [0.0, 0.1, 0.9],
    ]
    assert word_alignment(src, tgt, attention) == [(1, 0), (0, 1), (2, 2)]


def test_source_subwords_add_up_target_subwords_average():
    """ "▁wal" + "king" together outweigh "▁dog", though each alone does not; the target word
    "▁Spazier" + "gang" is linked by its two rows together, where its first alone picks "dog"."""
    src = ["▁dog", "▁wal", "king"]
    attention = torch.tensor(
        [
            [0.4, 0.35, 0.25],  # dog 0.4 < walking 0.6
            [0.6, 0.3, 0.1],  # dog 0.6 > walking 0.4
            [0.0, 0.5, 0.5],  # with the row above: dog 0.6 < walking 1.4
        ]
    )
    assert word_alignment(src, ["▁gehen"], attention[:1]) == [(1, 0)]
    assert word_alignment(src, ["▁Spazier"], attention[1:2]) == [(0, 0)]
    assert word_alignment(src, ["▁Spazier", "gang"], attention[1:]) == [(1, 0)]


def test_eos_row_and_column_are_excluded():
    src = ["▁Hello", "▁world"]
    tgt = ["▁Hallo", "▁Welt", "!"]
    with_eos = [
        [0.6, 0.1, 0.3],
        [0.1, 0.2, 0.7],  # most of it on EOS: the word with the most of the rest wins
        [0.0, 0.1, 0.9],
        [0.0, 0.0, 1.0],  # the EOS step
    ]
    assert word_alignment(src, tgt, with_eos) == [(0, 0), (1, 1)]
    without = [row[:2] for row in with_eos[:3]]
    assert word_alignment(src, tgt, without) == [(0, 0), (1, 1)]


def test_empty_translations_and_sources_have_no_links():
    assert word_alignment(["▁Hi"], [], torch.ones(1, 2)) == []  # the EOS step only
    assert word_alignment([], ["▁Hi"], torch.ones(1, 1)) == []  # a source of EOS alone
    assert word_alignment(["▁Hi"], ["▁"], torch.ones(1, 2)) == []  # a translation of no word


def test_a_matrix_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="2 target and 2 source"):
        word_alignment(["▁a", "▁b"], ["▁x", "▁y"], torch.ones(4, 2))
    with pytest.raises(ValueError, match="matrix"):
        word_alignment(["▁a"], ["▁x"], torch.ones(3))


def test_pharaoh_format_and_sentence_offsets():
    links = [(0, 0), (2, 1), (1, 2)]
    assert pharaoh(links) == "0-0 2-1 1-2"
    assert pharaoh([]) == ""
    assert offset(links, 3, 4) == [(3, 4), (5, 5), (4, 6)]


# -- from real models -------------------------------------------------------------------------

TEXTS = ["A dog runs .", "Two dogs play in the snow.", ""]


@pytest.mark.parametrize("arch", ["transformer", "lstm_attention", "gru_attention"])
def test_translations_carry_attention_and_alignments(trained_bundles, arch):
    """Each translation's attention has a row per target piece and EOS over its source pieces
    and EOS, each row a distribution; its links name words that exist; the translations are those of a
    search without attention."""
    translator = Translator.from_bundle(load_bundle(trained_bundles[arch]))
    search = translator.search.with_overrides(n_best=2)
    plain = translator.translate(TEXTS, search)
    aligned = translator.translate(TEXTS, search, alignments=True)
    assert [[t.text for t in nbest] for nbest in aligned] == [[t.text for t in nbest] for nbest in plain]
    for text, nbest in zip(TEXTS, aligned, strict=True):
        for translation in nbest:
            attention = translation.attention
            assert attention is not None and translation.alignment is not None
            assert attention.src_pieces == translator.src_tokenizer.pieces(translator.encode([text])[0])
            rows = len(attention.tgt_pieces) + 1 if text else 0  # EOS's row too, if it was decoded
            assert attention.weights.shape == (rows, len(attention.src_pieces) + 1)
            torch.testing.assert_close(attention.weights.sum(-1), torch.ones(rows))
            src_words, tgt_words = len(text.split()), len(translation.text.split())
            assert [tgt for _, tgt in translation.alignment] == list(range(tgt_words))
            assert all(0 <= src < src_words for src, _ in translation.alignment)
    assert all(t.attention is None and t.alignment is None for nbest in plain for t in nbest)


def test_a_model_without_attention_gives_no_alignments(trained_bundles):
    translator = Translator.from_bundle(load_bundle(trained_bundles["lstm"]))
    assert not translator.attends
    with pytest.raises(NoAttention, match="without attention.*cannot give alignments"):
        translator.translate(["A dog runs ."], alignments=True)


@pytest.mark.parametrize("name", ["transformer-en-de", "lstm-attention-en-de"])
def test_the_shipped_models_align_words_sensibly(name):
    """On real sentences the links are the ones a person would draw for these words."""
    translator = Translator.from_bundle(load_bundle(SHIPPED_MODELS / name))
    cases = {
        "A dog runs .": {"A": "Ein", "dog": "Hund", "runs": "rennt."},
        "Two dogs play in the snow.": {"Two": "Zwei", "dogs": "Hunde", "play": "spielen", "snow.": "Schnee."},
    }
    for nbest, (text, expected) in zip(
        translator.translate(list(cases), alignments=True), cases.items(), strict=True
    ):
        translation = nbest[0]
        src_words, tgt_words = text.split(), translation.text.split()
        links = {(src_words[src], tgt_words[tgt]) for src, tgt in translation.alignment or []}
        assert set(expected.items()) <= links, (translation.text, links)
