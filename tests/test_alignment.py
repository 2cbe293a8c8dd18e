"""Word alignments from subword attention, on hand-made matrices."""

from __future__ import annotations

import pytest
import torch

from nmt.alignment import offset, pharaoh, word_alignment, word_ids


def test_pieces_merge_into_words_at_word_starts():
    assert word_ids(["▁A", "▁do", "g", "▁runs", "."]) == [0, 1, 1, 2, 2]
    assert word_ids(["▁", "(", "a", "▁b"]) == [0, 0, 0, 1]  # a lone "▁" starts a word too
    assert word_ids(["ab", "c", "▁d"]) == [0, 0, 1]  # the first piece starts a word, marked or not
    assert word_ids([]) == []


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
