"""Lexical vocabulary shortlists: which target tokens a batch's translations may use.

A shortlist maps each source token id to its k most likely target tokens, ranked by a `score`
over a parallel corpus: "dice", how often the two occur in the same sentence pair (the Dice
coefficient of their sentence counts: 2 c(s, t) / (c(s) + c(t)), which, unlike the raw count,
does not rank the frequent target tokens first for every source token), or "ibm1", IBM model 1's
p(t | s) after a few rounds of EM (each target token explained by one source token of its pair
or NULL, so a token another source word explains leaves this one's row: sharper rows, fewer of
a translation's tokens missing at the same size; Marian and Bergamot take p(t | s) from
fast_align's lexical table the same way); and keeps the N most frequent target tokens besides.
Where the two sides share one vocabulary (one tokenizer), a table built with `copies` also lists
each source id in its own row: names, numbers and the words the languages share are then in the
union whenever the source has them, as copying them through needs.
Decoding a batch then computes the output layer only over the union of its
source tokens' rows, the frequent tokens and the specials (`vocabulary`), as Marian's and
Bergamot's lexical shortlists and CTranslate2's `vmap` do: for the LSTMs the output layer is
most of a step's multiply-adds. Normalised over the union alone, every log-probability rises by
the mass outside it, by a different amount for each hypothesis; a shortlist built with
`outside` M > 0 also counts M ids outside the union, each standing for its share of the rest
(`nmt.search.outside_sample`), which brings the translations closer to the full vocabulary's at
the cost of M more rows (PyTorch and ONNX Runtime; CTranslate2's vmap normalises over the union).

Stored in the bundle as shortlist.npz (`FILE`): the table as CSR arrays (indptr (V_src + 1,),
indices: the target ids of each source id's row, best first), the frequent ids, and a JSON
description (`meta`): the bundle version and tokenizer files (sha256) and vocabulary sizes it
was built for, k, N, M and the corpus. The bundle's version does not hash it (`nmt.bundle`), so
adding or rebuilding a shortlist leaves the version, the cache and the exports alone; the
loader refuses one built for another bundle version or vocabulary (`load_shortlist`).

A multilingual bundle (its sources start with a target-language token, `nmt.languages`) gets
one table per target language, built from the corpora into that language (so the row of "dog"
lists "Hund" in the German table and "chien" in the French one, and a batch into German never
pays for French candidates). The tables are stacked in one file: block b's rows are
b * V_src .. (b + 1) * V_src - 1, its frequent ids the b-th N of `frequent`, and `meta["targets"]`
lists [language, language token id] in block order; a source picks the block of the language
token it starts with. CTranslate2's vmap is one table for every target, so a multilingual
shortlist has none (`vmap_lines`).

Building streams the corpus in chunks and keeps only the distinct (source, target) pairs seen
with their counts, merged chunk by chunk: memory grows with the distinct pairs (at most
V_src * V_tgt), not with the corpus.

The union (`Shortlist.vocabulary`) is sorted, starts with the special ids 0..3 (PAD, UNK, BOS,
EOS: the output head finds EOS and the banned ids at their own positions) and is padded to a
multiple of `ALIGN` ids with the lowest ids missing from it (a slightly larger shortlist: the
ONNX head ranks its logits in blocks of up to 64); None means the full vocabulary, given
whenever the union would not be smaller.

Letters: V vocabulary, k candidates per source token, N frequent tokens, M ids sampled outside.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nmt.bundle import Bundle, bundle_file
from nmt.checkpoint import atomic_write
from nmt.data import iter_lines
from nmt.errors import BundleError, DataError
from nmt.languages import Direction
from nmt.specials import EOS_ID, UNK_ID
from nmt.tokenizer import Tokenizer

FILE = "shortlist.npz"
FORMAT = 1
SPECIALS = 4  # ids 0..3: PAD, UNK, BOS, EOS, always in the vocabulary, in that order
ALIGN = 64  # the vocabulary's length is a multiple of this (the ONNX head's block size divides it)
DEFAULT_K, DEFAULT_FREQUENT = 30, 100  # tuned on Multi30k val (docs/decode.md, "Shortlists")
DEFAULT_OUTSIDE = 0  # ids outside sampled for the normaliser: none unless a bundle's tuning says so
SCORES = ("dice", "ibm1")  # how a row ranks its candidates (the module docstring)
DEFAULT_SCORE = "dice"
IBM1_ITERATIONS = 5  # EM rounds of IBM model 1 (3 to 10 rank the rows alike on Multi30k)
ALIGNMENTS = 4_000_000  # (source, target) token pairs aligned at once by IBM model 1
CHUNK = 20_000  # sentence pairs counted at once


@dataclass(frozen=True)
class Shortlist:
    """A shortlist: row s of (indptr, indices) lists source id s's candidates, best first; with
    T target languages (`targets`), T such tables stacked (see the module docstring)."""

    indptr: np.ndarray  # (T * V_src + 1,) int64
    indices: np.ndarray  # (nnz,) int32 target ids
    frequent: np.ndarray  # (T * N,) int32 target ids, each table's most frequent first
    tgt_vocab_size: int
    meta: dict[str, Any]
    digest: str = ""  # sha256 of the file it was read from (the ct2 export's vmap records it)

    @property
    def outside(self) -> int:
        """How many ids outside a batch's vocabulary estimate the rest of the softmax normaliser
        (`nmt.search.outside_sample`); 0, files written before it: normalised over the vocabulary."""
        return int(self.meta.get("outside", 0))

    @property
    def targets(self) -> dict[int, int]:
        """{language token id: its table's block} of a multilingual shortlist; {} for one table."""
        return {int(token): block for block, (_, token) in enumerate(self.meta.get("targets", []))}

    @property
    def languages(self) -> list[str]:
        """The target languages of a multilingual shortlist's tables, in block order."""
        return [str(language) for language, _ in self.meta.get("targets", [])]

    @property
    def tables(self) -> int:
        return max(1, len(self.meta.get("targets", [])))

    @property
    def src_vocab_size(self) -> int:
        return (self.indptr.size - 1) // self.tables

    def candidates(self, rows: np.ndarray) -> np.ndarray:
        """The concatenated rows `rows` (any shape, any order; repeated ones once): for one
        table, rows are source ids; else block * V_src + source id."""
        rows = np.unique(rows.astype(np.int64, copy=False))
        rows = rows[(rows >= 0) & (rows < self.indptr.size - 1)]
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        sizes = ends - starts
        if sizes.sum() == 0:
            return np.zeros(0, np.int64)
        # positions start[r] .. end[r] of every row, in one vectorised step
        offsets = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        return self.indices[offsets].astype(np.int64)

    def vocabulary(self, src: Tensor | np.ndarray | Sequence[Sequence[int]]) -> Tensor | None:
        """Sorted target ids (V',) int64 a batch of sources (B, S) (padded, or a list of id lists)
        may translate into: the union of their tokens' rows, the frequent tokens and the specials,
        padded to a multiple of ALIGN (see the module docstring); None when that is not smaller
        than the full vocabulary. A multilingual shortlist takes each source's rows and frequent
        ids from the table of the language token it starts with (ValueError without one)."""
        if isinstance(src, Tensor):
            array = src.detach().cpu().numpy()
        elif isinstance(src, np.ndarray):
            array = src
        else:
            array = np.zeros((len(src), max((len(seq) for seq in src), default=0)), np.int64)  # PAD 0
            for row, seq in zip(array, src, strict=True):
                row[: len(seq)] = seq
        array = array.reshape(-1, array.shape[-1] if array.ndim else 1).astype(np.int64, copy=False)
        blocks = self._blocks(array)  # (B,)
        frequent = self.frequent.reshape(self.tables, -1)[np.unique(blocks)].ravel()
        outside = (array < 0) | (array >= self.src_vocab_size)  # no row (and never another block's)
        rows = np.where(outside, -1, blocks[:, None] * self.src_vocab_size + array)  # (B, S)
        ids = np.union1d(
            np.concatenate([np.arange(SPECIALS), frequent.astype(np.int64)]), self.candidates(rows)
        )
        size = -(-ids.size // ALIGN) * ALIGN
        if size >= self.tgt_vocab_size:
            return None
        if size > ids.size:
            missing = np.setdiff1d(np.arange(size, dtype=np.int64), ids, assume_unique=True)
            ids = np.union1d(ids, missing[: size - ids.size])
        return torch.from_numpy(ids)

    def _blocks(self, sources: np.ndarray) -> np.ndarray:
        """(B,) the table of each source (B, S): 0 for one table, else its language token's."""
        targets = self.targets  # built from meta at each call: once per batch here
        if not targets:
            return np.zeros(sources.shape[0], np.int64)
        firsts = sources[:, 0].tolist() if sources.shape[1] else [-1] * sources.shape[0]
        unknown = sorted({t for t in firsts if t not in targets})
        if unknown:
            raise ValueError(
                f"a multilingual shortlist needs every source to start with a target-language token "
                f"(of {', '.join(self.languages)}); got first ids {unknown[:5]}"
            )
        return np.array([targets[t] for t in firsts], np.int64)

    def vmap_lines(self, src_pieces: Sequence[str], tgt_pieces: Sequence[str]) -> Iterator[str]:
        """CTranslate2's vocabulary map (vmap.txt): "SOURCE<TAB>TARGET ..." per source piece with a
        row, and first "<TAB>TARGET ..." for the tokens always allowed (the frequent ones, UNK and
        EOS). Pieces are SentencePiece's, which hold no spaces or tabs. One table only: a vmap
        has no per-target tables (ValueError for a multilingual shortlist)."""
        if self.tables > 1:
            raise ValueError(
                "CTranslate2's vmap is one table for every target language; this shortlist has one "
                f"per target ({', '.join(self.languages)})"
            )
        always = [UNK_ID, EOS_ID, *self.frequent.tolist()]
        yield "\t" + " ".join(tgt_pieces[i] for i in always)
        for s in range(self.src_vocab_size):
            row = self.indices[self.indptr[s] : self.indptr[s + 1]]
            if row.size and s >= SPECIALS:
                yield src_pieces[s] + "\t" + " ".join(tgt_pieces[i] for i in row.tolist())


# -- building -------------------------------------------------------------------------------


def _distinct(seqs: Sequence[Sequence[int]], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sentence index, token id) of each sentence's distinct tokens, sorted by sentence."""
    lengths = np.fromiter((len(seq) for seq in seqs), dtype=np.int64, count=len(seqs))
    tokens = np.fromiter((t for seq in seqs for t in seq), dtype=np.int64, count=int(lengths.sum()))
    sentence = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths)
    codes = np.unique(sentence * vocab_size + tokens)
    return codes // vocab_size, codes % vocab_size


def _pair_counts(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], tgt_vocab_size: int, src_vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct codes s * V_tgt + t of the (source, target) token pairs that share a sentence pair,
    with the number of sentence pairs each occurs in."""
    s_sentence, s_token = _distinct(src, src_vocab_size)
    t_sentence, t_token = _distinct(tgt, tgt_vocab_size)
    per_sentence = np.bincount(t_sentence, minlength=len(tgt))  # distinct target tokens of each
    t_start = np.cumsum(per_sentence) - per_sentence
    repeats = per_sentence[s_sentence]  # each source token pairs with its sentence's targets
    total = int(repeats.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.repeat(t_start[s_sentence], repeats)
    within = np.arange(total) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    codes = np.repeat(s_token, repeats) * tgt_vocab_size + t_token[first + within]
    return np.unique(codes, return_counts=True)


def _merge(
    codes: np.ndarray, counts: np.ndarray, more_codes: np.ndarray, more_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    merged, inverse = np.unique(np.concatenate([codes, more_codes]), return_inverse=True)
    return merged, np.bincount(inverse, weights=np.concatenate([counts, more_counts])).astype(np.int64)


Chunk = tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]  # (source sentences, target sentences)
Corpus = Iterable[Chunk] | Callable[[], Iterable[Chunk]]  # chunks, or a function that reads them anew


def _chunks(corpus: Corpus) -> Iterable[Chunk]:
    return corpus() if callable(corpus) else corpus


def _ibm1(corpus: Corpus, codes: np.ndarray, sizes: tuple[int, int], iterations: int) -> np.ndarray:
    """IBM model 1's lexical probabilities p(t | s) (Brown et al. 1993), one per pair code
    s * V_tgt + t of `codes` (sorted; every pair that shares a sentence pair, and NULL's, s =
    V_src, with every target id): each target token is generated by one of its sentence's source
    tokens or NULL, chosen with probability proportional to p(t | s); `iterations` rounds of EM
    from uniform, each one reading the corpus (memory: the pairs, and one slice's alignments)."""
    src_vocab_size, tgt_vocab_size = sizes
    prob = np.ones(codes.size)
    for _ in range(iterations):
        counts = np.zeros(codes.size)
        for src, tgt in _chunks(corpus):
            for pair, target in _alignment_slices(src, tgt, src_vocab_size, tgt_vocab_size):
                index = np.searchsorted(codes, pair)  # every pair is in codes (first pass)
                weight = prob[index]
                share = weight / np.bincount(target, weights=weight)[target]  # P(this source | target token)
                counts += np.bincount(index, weights=share, minlength=codes.size)
        per_source = np.bincount(codes // tgt_vocab_size, weights=counts, minlength=src_vocab_size + 1)
        prob = counts / np.maximum(per_source[codes // tgt_vocab_size], 1e-30)
    return prob


def _alignment_slices(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], src_vocab_size: int, tgt_vocab_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For slices of the sentence pairs of at most ALIGNMENTS (source, target) token pairs:
    (codes s * V_tgt + t of every source token or NULL with every target token of its pair,
    the number of the target token within the slice each belongs to)."""
    start = 0
    while start < len(src):
        end, total = start, 0
        while end < len(src) and (end == start or total + (len(src[end]) + 1) * len(tgt[end]) <= ALIGNMENTS):
            total += (len(src[end]) + 1) * len(tgt[end])
            end += 1
        sources = [np.array([src_vocab_size, *seq], np.int64) for seq in src[start:end]]  # NULL first
        targets = [np.array(seq, np.int64) for seq in tgt[start:end]]
        offset = 0
        pairs, groups = [], []
        for source, target in zip(sources, targets, strict=True):
            pairs.append((source[:, None] * tgt_vocab_size + target[None, :]).ravel())
            groups.append(
                np.broadcast_to(offset + np.arange(target.size), (source.size, target.size)).ravel()
            )
            offset += target.size
        if offset:
            yield np.concatenate(pairs), np.concatenate(groups)
        start = end


def build_shortlist(
    corpus: Corpus,
    src_vocab_size: int,
    tgt_vocab_size: int,
    k: int = DEFAULT_K,
    frequent: int = DEFAULT_FREQUENT,
    meta: dict[str, Any] | None = None,
    outside: int = DEFAULT_OUTSIDE,
    score: str = DEFAULT_SCORE,
    copies: bool = False,
) -> Shortlist:
    """A shortlist from chunks of token id sequences (source chunk, target chunk), each a list of
    sentences: each source id's k best target ids by `score` (see the module docstring; "ibm1"
    reads the corpus IBM1_ITERATIONS more times, so give it a function that yields the chunks
    anew), and the `frequent` target ids found in the most sentences; decoding with it samples
    `outside` ids outside a batch's vocabulary for the normaliser (recorded only). With `copies`
    (the two sides share their ids) each source id's row ends with the id itself unless its k
    best already hold it."""
    if k < 1 or frequent < 0 or outside < 0 or score not in SCORES:
        raise DataError(
            f"a shortlist needs k >= 1, frequent >= 0, outside >= 0 and a score of {', '.join(SCORES)} "
            f"(got {k}, {frequent}, {outside}, {score})"
        )
    if score == "ibm1" and isinstance(corpus, Iterator):
        raise DataError(
            "IBM model 1 reads the corpus once per round: give a list or a function of the chunks"
        )
    codes, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    src_df = np.zeros(src_vocab_size, np.int64)  # sentences each source id occurs in
    tgt_df = np.zeros(tgt_vocab_size, np.int64)
    sentences = 0
    for src, tgt in _chunks(corpus):
        if len(src) != len(tgt):
            raise DataError(f"a chunk has {len(src)} source but {len(tgt)} target sentences")
        sentences += len(src)
        src_df += np.bincount(_distinct(src, src_vocab_size)[1], minlength=src_vocab_size)
        tgt_df += np.bincount(_distinct(tgt, tgt_vocab_size)[1], minlength=tgt_vocab_size)
        codes, counts = _merge(codes, counts, *_pair_counts(src, tgt, tgt_vocab_size, src_vocab_size))
    if sentences == 0:
        raise DataError("no sentence pairs to build a shortlist from")
    s, t = codes // tgt_vocab_size, codes % tgt_vocab_size
    if score == "ibm1":
        null = src_vocab_size * tgt_vocab_size + np.flatnonzero(tgt_df)  # NULL's pairs, after the rest
        pairs = np.concatenate([codes, null])
        scores = _ibm1(corpus, pairs, (src_vocab_size, tgt_vocab_size), IBM1_ITERATIONS)[: codes.size]
    else:
        scores = 2.0 * counts / (src_df[s] + tgt_df[t])
    keep = t >= SPECIALS  # specials are always allowed: no row needs them
    s, t, scores = s[keep], t[keep], scores[keep]
    order = np.lexsort((t, -scores, s))  # by source id, then best first (ties: lower id)
    s, t = s[order], t[order]
    row_sizes = np.bincount(s, minlength=src_vocab_size)
    rank = np.arange(s.size) - np.repeat(np.cumsum(row_sizes) - row_sizes, row_sizes)
    s, t = s[rank < k], t[rank < k]
    if copies:
        s, t = _with_copies(s, t, min(src_vocab_size, tgt_vocab_size), tgt_vocab_size)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(s, minlength=src_vocab_size))]).astype(np.int64)
    candidates = tgt_df.copy()
    candidates[:SPECIALS] = -1
    top = np.argsort(-candidates, kind="stable")[: min(frequent, tgt_vocab_size - SPECIALS)]
    description = {
        "format": FORMAT,
        "k": k,
        "frequent": int(top.size),
        "outside": outside,
        "pairs": sentences,
        "src_vocab_size": src_vocab_size,
        "tgt_vocab_size": tgt_vocab_size,
        "score": score,
        **({"iterations": IBM1_ITERATIONS} if score == "ibm1" else {}),
        **({"copies": True} if copies else {}),
        **(meta or {}),
    }
    return Shortlist(indptr, t.astype(np.int32), top.astype(np.int32), tgt_vocab_size, description)


def _with_copies(
    s: np.ndarray, t: np.ndarray, shared: int, tgt_vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (s, t), sorted by s, with (i, i) added at the end of row i for every non-special
    id i < `shared` the row lacks."""
    own = np.arange(SPECIALS, shared, dtype=s.dtype)
    own = own[~np.isin(own * tgt_vocab_size + own, s * tgt_vocab_size + t)]
    s, t = np.concatenate([s, own]), np.concatenate([t, own])
    order = np.argsort(s, kind="stable")  # each row's candidates keep their order, its own id last
    return s[order], t[order]


def tokenized_chunks(
    src_file: Path, tgt_file: Path, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, size: int = CHUNK
) -> Iterator[tuple[list[list[int]], list[list[int]]]]:
    """The two files' lines, tokenized, `size` pairs at a time (streamed: plain or .gz)."""
    pairs = zip_longest(iter_lines(src_file), iter_lines(tgt_file))
    while chunk := list(islice(pairs, size)):
        if any(src is None or tgt is None for src, tgt in chunk):
            raise DataError(f"{src_file} and {tgt_file} have different numbers of lines")
        src, tgt = (list(side) for side in zip(*chunk, strict=True))
        yield src_tokenizer.encode(src), tgt_tokenizer.encode(tgt)


def stack_tables(tables: Sequence[tuple[str, int, Shortlist]], meta: dict[str, Any]) -> Shortlist:
    """One shortlist of several tables (language, its language token id, its table), in that
    order: a multilingual bundle's (see the module docstring). The tables share k and N."""
    first = tables[0][2]
    offsets = np.cumsum([0] + [table.indices.size for _, _, table in tables[:-1]])
    indptr = np.concatenate(
        [[0]] + [table.indptr[1:] + offset for (_, _, table), offset in zip(tables, offsets, strict=True)]
    )
    shared = (
        "format",
        "k",
        "frequent",
        "outside",
        "src_vocab_size",
        "tgt_vocab_size",
        "score",
        "iterations",
        "copies",
    )
    description: dict[str, Any] = {
        **{key: first.meta[key] for key in shared if key in first.meta},
        "pairs": sum(int(table.meta["pairs"]) for _, _, table in tables),
        "targets": [[language, token] for language, token, _ in tables],
        **meta,
    }
    return Shortlist(
        indptr.astype(np.int64),
        np.concatenate([table.indices for _, _, table in tables]),
        np.concatenate([table.frequent for _, _, table in tables]),
        first.tgt_vocab_size,
        description,
    )


def shortlist_for_bundle(
    bundle: Bundle,
    corpora: Mapping[Direction, tuple[Path, Path]],
    k: int = DEFAULT_K,
    frequent: int = DEFAULT_FREQUENT,
    outside: int = DEFAULT_OUTSIDE,
    score: str = DEFAULT_SCORE,
    copies: bool = False,
) -> Shortlist:
    """A shortlist for `bundle` from parallel corpora {direction: (source file, target file)},
    tokenized with the bundle's tokenizers: one table from the one corpus of a bilingual bundle;
    for a multilingual bundle (language tokens), one table per target language from every
    corpus into it, and a corpus for each target language it translates into. DataError for a
    direction the bundle does not translate, a target language without a corpus, or `copies`
    (each source id in its own row) where the two sides have different tokenizers."""
    others = sorted(str(d) for d in corpora if not bundle.translates(d))
    if others or not corpora:
        served = ", ".join(map(str, bundle.directions))
        raise DataError(
            f"{bundle.name} translates {served}: "
            + (f"no {', '.join(others)}" if others else "give a corpus of at least one of them")
        )
    listed = {d: {"src": str(src), "tgt": str(tgt)} for d, (src, tgt) in sorted(corpora.items())}
    identity = _identity(bundle)
    if copies and identity["src_tokenizer_sha256"] != identity["tgt_tokenizer_sha256"]:
        raise DataError(
            f"{bundle.name} has a source and a target vocabulary of its own: a source id is no target "
            "id to copy (build it without copies)"
        )
    sizes = bundle.src_tokenizer.vocab_size, bundle.tgt_tokenizer.vocab_size

    def table(directions: list[Direction], meta: dict[str, Any]) -> Shortlist:
        def chunks() -> Iterator[Chunk]:  # read anew by each pass of the build
            for d in directions:
                yield from tokenized_chunks(*corpora[d], bundle.src_tokenizer, bundle.tgt_tokenizer)

        return build_shortlist(chunks, *sizes, k, frequent, meta, outside, score, copies)

    if not bundle.language_tokens:
        ((direction, files),) = listed.items()  # a bilingual bundle translates one direction
        return table([direction], {**identity, "corpus": files})
    targets = sorted({d.target for d in bundle.directions})
    missing = [t for t in targets if not any(d.target == t for d in corpora)]
    if missing:
        raise DataError(f"{bundle.name} translates into {', '.join(missing)} too: give a corpus into each")
    tables = []
    for target in targets:
        token = bundle.language_token_id(target)
        assert token is not None  # a bundle with language tokens has one for each target
        tables.append((target, token, table([d for d in sorted(corpora) if d.target == target], {})))
    every = [{"direction": str(d), **files} for d, files in listed.items()]
    return stack_tables(tables, {**identity, "corpus": every})


# -- the file -------------------------------------------------------------------------------


def _identity(bundle: Bundle) -> dict[str, Any]:
    """What a shortlist must match to be used with `bundle`."""
    return {
        "bundle_version": bundle.version,
        "src_tokenizer_sha256": bundle.src_tokenizer.file_hash(),
        "tgt_tokenizer_sha256": bundle.tgt_tokenizer.file_hash(),
        "src_vocab_size": bundle.src_tokenizer.vocab_size,
        "tgt_vocab_size": bundle.tgt_tokenizer.vocab_size,
    }


def save_shortlist(shortlist: Shortlist, path: Path) -> Path:
    """Write shortlist.npz atomically (compressed; the same table always gives the same bytes;
    target ids as uint16 where the vocabulary allows, int32 otherwise: both are read)."""
    buffer = io.BytesIO()
    small = shortlist.tgt_vocab_size <= np.iinfo(np.uint16).max + 1  # ids fit in 2 bytes: half the file
    arrays = {
        "indptr": shortlist.indptr,
        "indices": shortlist.indices.astype(np.uint16) if small else shortlist.indices,
        "frequent": shortlist.frequent,
        "meta": np.frombuffer(json.dumps(shortlist.meta, sort_keys=True).encode(), dtype=np.uint8),
    }
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:  # fixed dates: same bytes
        for name, array in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name + ".npy", (1980, 1, 1, 0, 0, 0)), entry.getvalue())
    data = buffer.getvalue()
    atomic_write(path, lambda handle: handle.write(data))
    return path


def read_shortlist(path: Path) -> Shortlist:
    """A shortlist file as it is (checked for consistency, not against a bundle)."""
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            indptr, indices, frequent = arrays["indptr"], arrays["indices"], arrays["frequent"]
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        tgt_vocab_size = int(meta["tgt_vocab_size"])
        tables = max(1, len(meta.get("targets", [])))
        consistent = (
            meta.get("format") == FORMAT
            and indptr.ndim == indices.ndim == frequent.ndim == 1
            and indptr.size == int(meta["src_vocab_size"]) * tables + 1
            and frequent.size % tables == 0
            and indptr[0] == 0
            and indptr[-1] == indices.size
            and bool(np.all(np.diff(indptr) >= 0))
            and all(a.size == 0 or (a.min() >= 0 and a.max() < tgt_vocab_size) for a in (indices, frequent))
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise BundleError(f"{path}: unreadable shortlist ({error.__class__.__name__})") from None
    if not consistent:
        raise BundleError(f"{path}: not a shortlist of format {FORMAT} (or a damaged one)")
    digest = hashlib.sha256(data).hexdigest()[:16]
    return Shortlist(
        indptr.astype(np.int64), indices.astype(np.int32), frequent, tgt_vocab_size, meta, digest
    )


def shortlist_path(bundle: Bundle) -> Path:
    return bundle_file(bundle.path, FILE, "shortlist")


def load_shortlist(bundle: Bundle) -> Shortlist | None:
    """The bundle's shortlist (None when it has none), refused with a one-line BundleError naming
    the file and what differs when it was built for another bundle version or vocabulary."""
    path = shortlist_path(bundle)
    if not path.is_file():
        return None
    shortlist = read_shortlist(path)
    expected = _identity(bundle)
    targets = sorted({d.target for d in bundle.directions}) if bundle.language_tokens else []
    expected["target languages"] = targets
    for key, value in expected.items():
        found = shortlist.languages if key == "target languages" else shortlist.meta.get(key)
        if found != value:
            what = key.replace("_", " ")
            raise BundleError(
                f"{path}: built for {what} {found}, the bundle has {value}; "
                f"run nmt shortlist --model {bundle.path} again"
            )
    return shortlist


def require_shortlist(bundle: Bundle) -> Shortlist:
    """`load_shortlist`, with a BundleError naming the command when the bundle has none."""
    shortlist = load_shortlist(bundle)
    if shortlist is None:
        raise BundleError(
            f"{bundle.path}: no {FILE}; build one with nmt shortlist --model {bundle.path} --src FILE --tgt FILE"
        )
    return shortlist
