"""Lexical vocabulary shortlists: which target tokens a batch's translations may use.

A shortlist maps each source token id to its k most likely target tokens, ranked by how often
the two occur in the same sentence pair of a parallel corpus (the Dice coefficient of their
sentence counts: 2 c(s, t) / (c(s) + c(t)), which, unlike the raw count, does not rank the
frequent target tokens first for every source token), and keeps the N most frequent target
tokens besides. Decoding a batch then computes the output layer only over the union of its
source tokens' rows, the frequent tokens and the specials (`vocabulary`), as Marian's and
Bergamot's lexical shortlists and CTranslate2's `vmap` do: for the LSTMs the output layer is
most of a step's multiply-adds.

Stored in the bundle as shortlist.npz (`FILE`): the table as CSR arrays (indptr (V_src + 1,),
indices: the target ids of each source id's row, best first), the frequent ids, and a JSON
description (`meta`): the bundle version and tokenizer files (sha256) and vocabulary sizes it
was built for, k, N and the corpus. The bundle's version does not hash it (`nmt.bundle`), so
adding or rebuilding a shortlist leaves the version, the cache and the exports alone; the
loader refuses one built for another bundle version or vocabulary (`load_shortlist`).

Building streams the corpus in chunks and keeps only the distinct (source, target) pairs seen
with their counts, merged chunk by chunk: memory grows with the distinct pairs (at most
V_src * V_tgt), not with the corpus.

The union (`Shortlist.vocabulary`) is sorted, starts with the special ids 0..3 (PAD, UNK, BOS,
EOS: the output head finds EOS and the banned ids at their own positions) and is padded to a
multiple of `ALIGN` ids with the lowest ids missing from it (a slightly larger shortlist: the
ONNX head ranks its logits in blocks of up to 64); None means the full vocabulary, given
whenever the union would not be smaller.

Letters: V vocabulary, k candidates per source token, N frequent tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Sequence
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
from nmt.specials import EOS_ID, UNK_ID
from nmt.tokenizer import Tokenizer

FILE = "shortlist.npz"
FORMAT = 1
SPECIALS = 4  # ids 0..3: PAD, UNK, BOS, EOS, always in the vocabulary, in that order
ALIGN = 64  # the vocabulary's length is a multiple of this (the ONNX head's block size divides it)
DEFAULT_K, DEFAULT_FREQUENT = 30, 100  # tuned on Multi30k val (docs/decode.md, "Shortlists")
CHUNK = 20_000  # sentence pairs counted at once


@dataclass(frozen=True)
class Shortlist:
    """A shortlist table: row s of (indptr, indices) lists source id s's candidates, best first."""

    indptr: np.ndarray  # (V_src + 1,) int64
    indices: np.ndarray  # (nnz,) int32 target ids
    frequent: np.ndarray  # (N,) int32 target ids, most frequent first
    tgt_vocab_size: int
    meta: dict[str, Any]
    digest: str = ""  # sha256 of the file it was read from (the ct2 export's vmap records it)

    @property
    def src_vocab_size(self) -> int:
        return self.indptr.size - 1

    def candidates(self, src_ids: np.ndarray) -> np.ndarray:
        """The concatenated rows of the distinct ids `src_ids` (any shape, any order)."""
        rows = np.unique(src_ids.astype(np.int64, copy=False))
        rows = rows[(rows >= 0) & (rows < self.src_vocab_size)]
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        sizes = ends - starts
        if sizes.sum() == 0:
            return np.zeros(0, np.int64)
        # positions start[r] .. end[r] of every row, in one vectorised step
        offsets = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        return self.indices[offsets].astype(np.int64)

    def vocabulary(self, src: Tensor | np.ndarray | Sequence[Sequence[int]]) -> Tensor | None:
        """Sorted target ids (V',) int64 a batch of sources (B, S) may translate into: the union of
        their tokens' rows, the frequent tokens and the specials, padded to a multiple of ALIGN
        (see the module docstring); None when that is not smaller than the full vocabulary."""
        if isinstance(src, Tensor):
            array = src.detach().cpu().numpy()
        elif isinstance(src, np.ndarray):
            array = src
        else:
            array = np.fromiter((t for seq in src for t in seq), dtype=np.int64)
        ids = np.union1d(
            np.concatenate([np.arange(SPECIALS), self.frequent.astype(np.int64)]), self.candidates(array)
        )
        size = -(-ids.size // ALIGN) * ALIGN
        if size >= self.tgt_vocab_size:
            return None
        if size > ids.size:
            missing = np.setdiff1d(np.arange(size, dtype=np.int64), ids, assume_unique=True)
            ids = np.union1d(ids, missing[: size - ids.size])
        return torch.from_numpy(ids)

    def vmap_lines(self, src_pieces: Sequence[str], tgt_pieces: Sequence[str]) -> Iterator[str]:
        """CTranslate2's vocabulary map (vmap.txt): "SOURCE<TAB>TARGET ..." per source piece with a
        row, and first "<TAB>TARGET ..." for the tokens always allowed (the frequent ones, UNK and
        EOS). Pieces are SentencePiece's, which hold no spaces or tabs."""
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


def build_shortlist(
    pairs: Iterable[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]],
    src_vocab_size: int,
    tgt_vocab_size: int,
    k: int = DEFAULT_K,
    frequent: int = DEFAULT_FREQUENT,
    meta: dict[str, Any] | None = None,
) -> Shortlist:
    """A shortlist from chunks of token id sequences (source chunk, target chunk), each a list of
    sentences: each source id's k best target ids by Dice, and the `frequent` target ids found in
    the most sentences."""
    if k < 1 or frequent < 0:
        raise ValueError(f"k must be >= 1 and frequent >= 0 (got {k}, {frequent})")
    codes, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    src_df = np.zeros(src_vocab_size, np.int64)  # sentences each source id occurs in
    tgt_df = np.zeros(tgt_vocab_size, np.int64)
    sentences = 0
    for src, tgt in pairs:
        if len(src) != len(tgt):
            raise DataError(f"a chunk has {len(src)} source but {len(tgt)} target sentences")
        sentences += len(src)
        src_df += np.bincount(_distinct(src, src_vocab_size)[1], minlength=src_vocab_size)
        tgt_df += np.bincount(_distinct(tgt, tgt_vocab_size)[1], minlength=tgt_vocab_size)
        codes, counts = _merge(codes, counts, *_pair_counts(src, tgt, tgt_vocab_size, src_vocab_size))
    if sentences == 0:
        raise DataError("no sentence pairs to build a shortlist from")
    s, t = codes // tgt_vocab_size, codes % tgt_vocab_size
    keep = t >= SPECIALS  # specials are always allowed: no row needs them
    s, t, counts = s[keep], t[keep], counts[keep]
    dice = 2.0 * counts / (src_df[s] + tgt_df[t])
    order = np.lexsort((t, -dice, s))  # by source id, then best first (ties: lower id)
    s, t = s[order], t[order]
    row_sizes = np.bincount(s, minlength=src_vocab_size)
    rank = np.arange(s.size) - np.repeat(np.cumsum(row_sizes) - row_sizes, row_sizes)
    kept = rank < k
    indptr = np.concatenate([[0], np.cumsum(np.minimum(row_sizes, k))]).astype(np.int64)
    candidates = tgt_df.copy()
    candidates[:SPECIALS] = -1
    top = np.argsort(-candidates, kind="stable")[: min(frequent, tgt_vocab_size - SPECIALS)]
    description = {
        "format": FORMAT,
        "k": k,
        "frequent": int(top.size),
        "pairs": sentences,
        "src_vocab_size": src_vocab_size,
        "tgt_vocab_size": tgt_vocab_size,
        "score": "dice",
        **(meta or {}),
    }
    return Shortlist(indptr, t[kept].astype(np.int32), top.astype(np.int32), tgt_vocab_size, description)


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


def shortlist_for_bundle(
    bundle: Bundle, src_file: Path, tgt_file: Path, k: int = DEFAULT_K, frequent: int = DEFAULT_FREQUENT
) -> Shortlist:
    """A shortlist for `bundle` from a parallel corpus tokenized with the bundle's tokenizers."""
    chunks = tokenized_chunks(src_file, tgt_file, bundle.src_tokenizer, bundle.tgt_tokenizer)
    return build_shortlist(
        chunks,
        bundle.src_tokenizer.vocab_size,
        bundle.tgt_tokenizer.vocab_size,
        k,
        frequent,
        {**_identity(bundle), "corpus": {"src": str(src_file), "tgt": str(tgt_file)}},
    )


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
    """Write shortlist.npz atomically (compressed; the same table always gives the same bytes)."""
    buffer = io.BytesIO()
    arrays = {
        "indptr": shortlist.indptr,
        "indices": shortlist.indices,
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
        consistent = (
            meta.get("format") == FORMAT
            and indptr.ndim == indices.ndim == frequent.ndim == 1
            and indptr.size == int(meta["src_vocab_size"]) + 1
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
    for key, value in expected.items():
        if shortlist.meta.get(key) != value:
            what = key.replace("_", " ")
            raise BundleError(
                f"{path}: built for {what} {shortlist.meta.get(key)}, the bundle has {value}; "
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
