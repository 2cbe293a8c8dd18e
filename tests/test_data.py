"""Reading, filtering, collating and batching parallel data."""

from __future__ import annotations

import gzip
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.config import CorpusConfig, TokenizerConfig
from nmt.data import (
    Batch,
    ParallelCorpus,
    collate_source,
    collate_target,
    filter_pairs,
    make_batches,
    read_corpus,
    read_lines,
    shard,
)
from nmt.errors import DataError
from nmt.specials import BOS_ID, EOS_ID, PAD_ID
from nmt.tokenizer import train_tokenizers
from tests.conftest import MULTI30K

# --------------------------------------------------------------------------- reading


def test_read_plain_and_gz(tmp_path: Path) -> None:
    text = "ein Haus  \r\nzwei Häuser\n\nlast line without newline"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8", newline="")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8", newline="") as file:
        file.write(text)
    expected = ["ein Haus", "zwei Häuser", "", "last line without newline"]
    assert read_lines(tmp_path / "a.txt") == expected
    assert read_lines(tmp_path / "a.txt.gz") == expected


def test_read_splits_on_newlines_only(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\u2028still one\x85and one\ntwo\n", encoding="utf-8")
    assert read_lines(tmp_path / "a.txt") == ["one\u2028still one\x85and one", "two"]


def test_read_normalises_to_nfc(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Mädchen café")
    assert len(decomposed) == 14
    (tmp_path / "a.txt").write_text(decomposed + "\n", encoding="utf-8")
    [line] = read_lines(tmp_path / "a.txt")
    assert line == "Mädchen café" and len(line) == 12


def test_read_tsv(tmp_path: Path) -> None:
    (tmp_path / "c.tsv").write_text(
        "a house\tein Haus\ntwo houses \t zwei Häuser\r\nempty\t\n", encoding="utf-8"
    )
    src, tgt = read_corpus(CorpusConfig(tsv=tmp_path / "c.tsv"))
    assert src == ["a house", "two houses", "empty"]
    assert tgt == ["ein Haus", "zwei Häuser", ""]


def test_read_aligned_pair(tmp_path: Path) -> None:
    (tmp_path / "c.en").write_text("a\nb\n", encoding="utf-8")
    with gzip.open(tmp_path / "c.de.gz", "wt", encoding="utf-8") as file:
        file.write("x\ny\n")
    assert read_corpus(CorpusConfig(src=tmp_path / "c.en", tgt=tmp_path / "c.de.gz")) == (
        ["a", "b"],
        ["x", "y"],
    )


def test_bad_tsv_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv: line 2"):
        read_corpus(CorpusConfig(tsv=tmp_path / "bad.tsv"))
    (tmp_path / "bad2.tsv").write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad2\.tsv: line 1"):
        read_corpus(CorpusConfig(tsv=tmp_path / "bad2.tsv"))


def test_misaligned_files(tmp_path: Path) -> None:
    (tmp_path / "c.en").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "c.de").write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.en has 3 lines but .*c\.de has 2"):
        read_corpus(CorpusConfig(src=tmp_path / "c.en", tgt=tmp_path / "c.de"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"\n \n", "empty"),
        ("latin1.txt", "caf\u00e9\n".encode("latin-1"), "not UTF-8"),
        ("broken.gz", b"not gzip at all", "not a valid gzip"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=f"{name}.*{message}"):
        read_lines(tmp_path / name)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.en"):
        read_lines(tmp_path / "nowhere.en")
    (tmp_path / "c.de").write_text("x\n", encoding="utf-8")
    with pytest.raises(DataError, match="nowhere.en"):
        read_corpus(CorpusConfig(src=tmp_path / "nowhere.en", tgt=tmp_path / "c.de"))


# --------------------------------------------------------------------------- filtering


def test_filter_pairs_counts_each_reason_once() -> None:
    src = [[5] * 3, [], [5] * 200, [5] * 2, [5] * 10, [], [5] * 4]
    tgt = [[6] * 4, [6] * 3, [6] * 300, [6] * 9, [6] * 10, [6] * 200, [6] * 12]
    # kept, empty, too long, ratio 4.5, kept, empty (also too long), ratio exactly 3.0 is kept
    kept, report = filter_pairs(src, tgt, max_tokens=128, max_ratio=3.0)
    assert kept == [0, 4, 6]
    assert (report.total, report.kept, report.empty, report.too_long, report.bad_ratio) == (7, 3, 2, 1, 1)
    assert str(report) == "kept 3 of 7 pairs: 2 empty, 1 over 128 tokens, 1 length ratio > 3.0"


def test_filter_report_formats_thousands() -> None:
    src = [[1, 2]] * 29_000
    kept, report = filter_pairs(src, src, max_tokens=128, max_ratio=3.0)
    assert len(kept) == 29_000
    assert str(report).startswith("kept 29,000 of 29,000 pairs: 0 empty")


# --------------------------------------------------------------------------- collating


def test_collate_source_appends_eos_and_pads() -> None:
    src, lengths = collate_source([[7, 8, 9], [10]])
    assert src.dtype == torch.long and src.shape == (2, 4)
    assert src.tolist() == [[7, 8, 9, EOS_ID], [10, EOS_ID, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [4, 2]


def test_collate_target_shifts_by_one() -> None:
    tgt_in, tgt_out = collate_target([np.array([7, 8]), np.array([9, 10, 11])])
    assert tgt_in.shape == tgt_out.shape == (2, 4)
    assert tgt_in.tolist() == [[BOS_ID, 7, 8, PAD_ID], [BOS_ID, 9, 10, 11]]
    assert tgt_out.tolist() == [[7, 8, EOS_ID, PAD_ID], [9, 10, 11, EOS_ID]]


def test_corpus_collate_and_batch_to() -> None:
    corpus = ParallelCorpus([[4, 5], [6], [7, 8, 9]], [[10], [11, 12, 13], [14, 15]])
    assert len(corpus) == 3
    batch = corpus.collate([2, 0])
    assert batch.src.tolist() == [[7, 8, 9, EOS_ID], [4, 5, EOS_ID, PAD_ID]]
    assert batch.tgt_out.tolist() == [[14, 15, EOS_ID], [10, EOS_ID, PAD_ID]]
    assert batch.ntokens == int((batch.tgt_out != PAD_ID).sum()) == 5
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved is not batch and moved.ntokens == 5
    assert torch.equal(moved.tgt_in, batch.tgt_in)


def test_filtered_corpus_keeps_only_good_pairs() -> None:
    corpus, report = ParallelCorpus.filtered([[4, 5], [], [6]], [[7], [8], [9] * 9], 128, 3.0)
    assert len(corpus) == 1 and report.kept == 1
    assert corpus.collate([0]).src.tolist() == [[4, 5, EOS_ID]]


# --------------------------------------------------------------------------- batching


def _random_lengths(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 60, size=n)
    tgt = np.clip(src + rng.integers(-10, 10, size=n), 1, None)
    return src, tgt


def test_make_batches_respects_budget_and_covers_every_index_once() -> None:
    src, tgt = _random_lengths()
    batches = make_batches(src, tgt, batch_tokens=500, seed=1, epoch=0)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(src)))
    for batch in batches:
        assert len(batch) * (src[batch].max() + 1) <= 500
        assert len(batch) * (tgt[batch].max() + 1) <= 500


def test_make_batches_gives_an_oversized_pair_its_own_batch() -> None:
    src, tgt = np.array([3, 100, 4, 2]), np.array([3, 5, 4, 200])
    batches = make_batches(src, tgt, batch_tokens=50, seed=1, epoch=0)
    assert sorted(map(sorted, (b.tolist() for b in batches))) == [[0, 2], [1], [3]]


def test_make_batches_is_deterministic_per_seed_and_epoch() -> None:
    src, tgt = _random_lengths()

    def as_lists(seed: int, epoch: int) -> list[list[int]]:
        return [b.tolist() for b in make_batches(src, tgt, 500, seed, epoch)]

    assert as_lists(1, 0) == as_lists(1, 0)
    assert as_lists(1, 0) != as_lists(1, 1)
    assert as_lists(1, 0) != as_lists(2, 0)


def test_shard_gives_every_process_the_same_number() -> None:
    batches = [[i] for i in range(10)]
    shards = [shard(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert shards[0] == [[0], [3], [6]] and shards[2] == [[2], [5], [8]]
    assert shard(batches, 0, 1) == batches
    with pytest.raises(ValueError):
        shard(batches, 3, 3)


def test_padding_fraction_counts_both_sides() -> None:
    corpus = ParallelCorpus([[1], [1, 1, 1]], [[1, 1], [1, 1]])
    # source (EOS added): lengths 2 and 4 in width 4 -> 2 pads of 8; target: 3 and 3 -> 0 of 6
    assert corpus.padding_fraction([[0, 1]]) == pytest.approx(2 / 14)
    assert corpus.padding_fraction([[0], [1]]) == 0.0


@pytest.mark.usefixtures("multi30k")
def test_multi30k_epoch_is_at_most_ten_percent_padding(tmp_path: Path) -> None:
    start = time.perf_counter()
    src_texts, tgt_texts = read_corpus(
        CorpusConfig(src=MULTI30K / "train.en.gz", tgt=MULTI30K / "train.de.gz")
    )
    assert len(src_texts) == 29_000
    tokenizer, _ = train_tokenizers(
        TokenizerConfig(type="unigram", vocab_size=8000, joint=True),
        src_texts,
        tgt_texts,
        tmp_path,
        "en",
        "de",
    )
    assert tokenizer.vocab_size == 8000
    corpus, report = ParallelCorpus.filtered(
        tokenizer.encode(src_texts), tokenizer.encode(tgt_texts), max_tokens=128, max_ratio=3.0
    )
    batches = corpus.batches(batch_tokens=4096, seed=1, epoch=0)
    fraction = corpus.padding_fraction(batches)
    print(f"\nMulti30k en-de train: {report}; {len(batches)} batches; padding {fraction:.2%}")
    print(f"({time.perf_counter() - start:.1f} s)")
    assert sorted(i for batch in batches for i in batch) == list(range(len(corpus)))
    assert fraction <= 0.10


def _greedy_cut_reference(src_lens, tgt_lens, batch_tokens, seed, epoch):
    """make_batches as it was first written: one Python step per pair (the specification)."""
    src_lens, tgt_lens = np.asarray(src_lens) + 1, np.asarray(tgt_lens) + 1
    rng = np.random.default_rng([seed, epoch])
    tie_break = rng.permutation(len(src_lens))
    order = np.lexsort((tie_break, src_lens, tgt_lens))
    batches, start, src_max, tgt_max = [], 0, 0, 0
    for position, index in enumerate(order):
        src_max, tgt_max = max(src_max, src_lens[index]), max(tgt_max, tgt_lens[index])
        size = position - start + 1
        if size > 1 and size * max(src_max, tgt_max) > batch_tokens:
            batches.append(order[start:position])
            start, src_max, tgt_max = position, src_lens[index], tgt_lens[index]
    if start < len(order):
        batches.append(order[start:])
    return [batches[i].tolist() for i in rng.permutation(len(batches))]


@pytest.mark.parametrize("budget", [1, 7, 50, 600])
def test_make_batches_cuts_where_the_pair_by_pair_greedy_cut_does(budget) -> None:
    rng = np.random.default_rng(5)
    src, tgt = rng.integers(0, 40, 3000), rng.integers(0, 40, 3000)
    src[::97] = 200  # some pairs too long for the smaller budgets
    got = [b.tolist() for b in make_batches(src, tgt, budget, seed=3, epoch=2)]
    assert got == _greedy_cut_reference(src, tgt, budget, seed=3, epoch=2)
