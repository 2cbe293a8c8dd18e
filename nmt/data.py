"""Parallel data: read corpora, filter pairs, batch by length with a token budget, collate to tensors.

The path from files to a training step is
``iter_lines`` (streamed) -> ``Tokenizer`` in workers -> ``filter_lengths`` -> the prepared dataset
(``nmt.dataset``, memory-mapped) -> ``make_batches`` -> ``shard`` (one slice per process) ->
``collate`` -> ``Batch``. Small in-memory sets (validation, tests) use ``read_corpus`` ->
``Tokenizer.encode`` -> ``ParallelCorpus``, which batches and collates the same way.

Batches hold a *token budget* rather than a fixed number of sentences: pairs of similar length are
grouped so that little of each padded tensor is padding, and short sentences make larger batches.
Every random choice comes from ``np.random.default_rng([seed, epoch])``, so an epoch's batches are
the same on every run and on every process of a distributed job.

Shape letters: B batch, S source length, T target length (both include the EOS / BOS position).
"""

from __future__ import annotations

import gzip
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt.config import CorpusConfig
from nmt.errors import DataError
from nmt.specials import BOS_ID, EOS_ID, PAD_ID

TokenIds = Sequence[int] | np.ndarray  # one sentence: a list of ids or a 1-D integer array


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """The whole file (plain or .gz) as NFC-normalised text; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: not a valid gzip file ({error})") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not part of the first line
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}, byte {error.start})") from None
    # NFC makes "é" one code point whichever way the file spelled it, so the tokenizer sees one form.
    return unicodedata.normalize("NFC", text)


def _split_lines(text: str, path: Path) -> list[str]:
    """Split on newlines only (not on the other separators that str.splitlines knows)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: file is empty")
    return lines


def read_lines(path: str | Path) -> list[str]:
    """One string per line of a plain or .gz UTF-8 file, NFC-normalised, trailing whitespace removed."""
    path = Path(path)
    return [line.rstrip() for line in _split_lines(_read_text(path), path)]


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    src, tgt = [], []
    for number, line in enumerate(_split_lines(_read_text(path), path), start=1):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}: line {number} has {len(fields) - 1} tabs, expected one (src<TAB>tgt)")
        src.append(fields[0].strip())
        tgt.append(fields[1].strip())
    return src, tgt


def read_corpus(corpus: CorpusConfig) -> tuple[list[str], list[str]]:
    """Source and target sentences of one corpus, aligned: two line-aligned files or one TSV."""
    if corpus.tsv is not None:
        return _read_tsv(corpus.tsv)
    assert corpus.src is not None and corpus.tgt is not None  # guaranteed by CorpusConfig
    src, tgt = read_lines(corpus.src), read_lines(corpus.tgt)
    if len(src) != len(tgt):
        raise DataError(f"{corpus.src} has {len(src):,} lines but {corpus.tgt} has {len(tgt):,}")
    return src, tgt


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of `read_lines`, streamed: one line in memory at a time (a .gz file is
    decompressed as it is read). The same DataErrors, raised when the reader gets there."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    number, seen_text = 0, False
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):  # binary lines end at b"\n" only
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not text
                try:
                    line = raw.decode("utf-8").rstrip()
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}: not UTF-8 text (line {number}, byte {error.start} of it)"
                    ) from None
                seen_text = seen_text or bool(line)
                yield unicodedata.normalize("NFC", line)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: not a valid gzip file ({error})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if not seen_text:
        raise DataError(f"{path}: file is empty")


def iter_tsv_column(path: str | Path, column: int) -> Iterator[str]:
    """Column 0 (source) or 1 (target) of a src<TAB>tgt file, streamed; DataError naming the line
    that does not have exactly one tab."""
    for number, line in enumerate(iter_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}: line {number} has {len(fields) - 1} tabs, expected one (src<TAB>tgt)")
        yield fields[column].strip()


# --------------------------------------------------------------------------- filtering


@dataclass(frozen=True)
class FilterReport:
    """How many pairs `filter_pairs` kept, and why it dropped the others (each counted once)."""

    total: int
    kept: int
    empty: int
    too_long: int
    bad_ratio: int
    max_tokens: int
    max_ratio: float
    duplicates: int = 0  # exact repeats of an earlier pair (counted only when data.dedup asks)

    def __str__(self) -> str:
        return (
            f"kept {self.kept:,} of {self.total:,} pairs: {self.empty:,} empty, "
            f"{self.too_long:,} over {self.max_tokens:,} tokens, "
            f"{self.bad_ratio:,} length ratio > {float(self.max_ratio)}"
            + (f", {self.duplicates:,} duplicates" if self.duplicates else "")
        )


def filter_lengths(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, max_ratio: float
) -> tuple[np.ndarray, FilterReport]:
    """`filter_pairs` on token counts alone: (N,) lengths -> (K,) int64 indices kept, and the report."""
    src_lens, tgt_lens = np.asarray(src_lens, dtype=np.int64), np.asarray(tgt_lens, dtype=np.int64)
    if src_lens.shape != tgt_lens.shape:
        raise ValueError(f"{len(src_lens)} source but {len(tgt_lens)} target sentences")
    shorter, longer = np.minimum(src_lens, tgt_lens), np.maximum(src_lens, tgt_lens)
    empty = shorter == 0
    too_long = ~empty & (longer > max_tokens)
    bad_ratio = ~empty & ~too_long & (longer / np.maximum(shorter, 1) > max_ratio)
    kept = np.flatnonzero(~(empty | too_long | bad_ratio))
    report = FilterReport(
        len(src_lens),
        len(kept),
        int(empty.sum()),
        int(too_long.sum()),
        int(bad_ratio.sum()),
        max_tokens,
        max_ratio,
    )
    return kept, report


def filter_pairs(
    src_ids: Sequence[TokenIds], tgt_ids: Sequence[TokenIds], max_tokens: int, max_ratio: float
) -> tuple[list[int], FilterReport]:
    """Indices of the pairs worth training on, and a report of what was dropped.

    A pair is dropped, for the first reason that applies, when either side is empty, either side
    has more than `max_tokens` tokens, or the longer side is more than `max_ratio` times the shorter.
    """
    kept, report = filter_lengths(
        np.array([len(ids) for ids in src_ids], dtype=np.int64),
        np.array([len(ids) for ids in tgt_ids], dtype=np.int64),
        max_tokens,
        max_ratio,
    )
    return kept.tolist(), report


# --------------------------------------------------------------------------- collating


def _pad(seqs: Sequence[TokenIds], prefix: list[int], suffix: list[int]) -> torch.Tensor:
    """Rows ``prefix + seq + suffix``, right-padded with PAD into one (B, L) LongTensor."""
    width = max(len(seq) for seq in seqs) + len(prefix) + len(suffix)
    out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids = [*prefix, *seq, *suffix]
        out[row, : len(ids)] = ids
    return torch.from_numpy(out)


def collate_source(seqs: Sequence[TokenIds]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source batch: ``src`` (B, S) with EOS appended and PAD after it; ``lengths`` (B,) counting the EOS."""
    src = _pad(seqs, [], [EOS_ID])  # (B, S)
    lengths = torch.tensor([len(seq) + 1 for seq in seqs], dtype=torch.long)  # (B,)
    return src, lengths


def collate_target(seqs: Sequence[TokenIds]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: decoder input ``[BOS] + y`` and expected output ``y + [EOS]``, both (B, T)."""
    return _pad(seqs, [BOS_ID], []), _pad(seqs, [], [EOS_ID])


@dataclass
class Batch:
    """One training batch.

    src (B, S), src_lengths (B,), tgt_in (B, T), tgt_out (B, T); all LongTensors, padded with PAD.
    ntokens is the number of non-pad target tokens (what the loss is averaged over).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    ntokens: int

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on `device`."""
        return Batch(
            src=self.src.to(device),
            src_lengths=self.src_lengths.to(device),
            tgt_in=self.tgt_in.to(device),
            tgt_out=self.tgt_out.to(device),
            ntokens=self.ntokens,
        )


# --------------------------------------------------------------------------- batching


def make_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, batch_tokens: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Group pair indices into batches of similar length whose padded size fits `batch_tokens`.

    Pairs are sorted by (target length, source length), ties broken at random, and cut greedily so
    that ``len(batch) * longest`` stays within `batch_tokens` on each side, counting the EOS / BOS
    that collation adds. A pair too long for the budget gets a batch of its own. The order of the
    batches is then shuffled. The result depends only on the inputs, `seed` and `epoch`.
    Target length sorts first because target positions cost the most (decoder and output layer).
    """
    src_lens = np.asarray(src_lens, dtype=np.int64) + 1  # + EOS
    tgt_lens = np.asarray(tgt_lens, dtype=np.int64) + 1  # + BOS (tgt_in) or EOS (tgt_out)
    rng = np.random.default_rng([seed, epoch])
    tie_break = rng.permutation(len(src_lens))
    order = np.lexsort((tie_break, src_lens, tgt_lens))  # the last key sorts first

    # The greedy cut, one batch at a time: a batch is the longest run from `start` whose every
    # prefix of size s >= 2 keeps s * (its longest side) within the budget. That product only grows
    # with s, and every length is >= 1, so no batch holds more than batch_tokens pairs: one numpy
    # pass over at most batch_tokens + 1 candidates finds each cut (a loop per batch, not per pair).
    longest = np.maximum(src_lens, tgt_lens)[order]
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        window = np.maximum.accumulate(longest[start : start + batch_tokens + 1])
        over = np.flatnonzero(np.arange(1, len(window) + 1) * window > batch_tokens)
        over = over[over > 0]  # a pair too long for the budget still gets a batch of its own
        size = int(over[0]) if len(over) else len(window)
        batches.append(order[start : start + size])
        start += size
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batches: list, rank: int, world_size: int) -> list:
    """This process's share of the batches; every process gets the same number.

    The last ``len(batches) % world_size`` batches are dropped so that no process waits for another
    at the end of an epoch (distributed gradient averaging needs all processes to step together).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    usable = len(batches) - len(batches) % world_size
    return batches[:usable][rank::world_size]


class ParallelCorpus:
    """Token ids of the kept sentence pairs, with batching and collation."""

    def __init__(self, src_ids: Sequence[TokenIds], tgt_ids: Sequence[TokenIds]):
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"{len(src_ids)} source but {len(tgt_ids)} target sentences")
        self.src_ids = src_ids
        self.tgt_ids = tgt_ids
        self.src_lens = np.array([len(ids) for ids in src_ids], dtype=np.int64)
        self.tgt_lens = np.array([len(ids) for ids in tgt_ids], dtype=np.int64)

    @classmethod
    def filtered(
        cls, src_ids: Sequence[TokenIds], tgt_ids: Sequence[TokenIds], max_tokens: int, max_ratio: float
    ) -> tuple[ParallelCorpus, FilterReport]:
        """The corpus of the pairs that `filter_pairs` keeps, and its report."""
        kept, report = filter_pairs(src_ids, tgt_ids, max_tokens, max_ratio)
        return cls([src_ids[i] for i in kept], [tgt_ids[i] for i in kept]), report

    def __len__(self) -> int:
        return len(self.src_ids)

    def batches(self, batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
        """One epoch of batches as lists of pair indices (see `make_batches`)."""
        batches = make_batches(self.src_lens, self.tgt_lens, batch_tokens, seed, epoch)
        return [batch.tolist() for batch in batches]

    def collate(self, indices: Sequence[int]) -> Batch:
        """The tensors of the pairs at `indices`, in that order."""
        src, src_lengths = collate_source([self.src_ids[i] for i in indices])
        tgt_in, tgt_out = collate_target([self.tgt_ids[i] for i in indices])
        ntokens = int(self.tgt_lens[list(indices)].sum()) + len(indices)  # + one EOS per sentence
        return Batch(src, src_lengths, tgt_in, tgt_out, ntokens)

    def padding_fraction(self, batches: Sequence[Sequence[int]]) -> float:
        """Share of padded positions among all positions of the source and target tensors."""
        padded = total = 0
        for indices in batches:
            for lens in (self.src_lens[list(indices)] + 1, self.tgt_lens[list(indices)] + 1):
                total += len(lens) * int(lens.max())
                padded += len(lens) * int(lens.max()) - int(lens.sum())
        return padded / total if total else 0.0
