"""A prepared dataset: a recipe's corpora tokenized once into memory-mapped arrays.

`prepare` streams every corpus file (never the whole corpus in memory), trains the tokenizer on
a bounded shuffled sample when there is none yet, encodes each text file once in worker
processes (a multi-way corpus listed in six directions is still three files), filters each
training corpus with the `filter_pairs` rules (and, with ``data.dedup``, drops exact duplicate
pairs) and writes, into one folder (``data.prepared``, default ``<train.out_dir>/data``):

    manifest.json             what was made from what: the tokenizers' sha256, each corpus file's
                              size and sha256, the recipe settings that shape the data, and per
                              corpus its filter report
    spm*.model                the tokenizer(s)
    text-<key>.ids            one text file's token ids, flat: uint16 when the vocabulary fits,
                              else int32 (<key> hashes the file, the column and the tokenizer)
    text-<key>.offsets.npy    int64 (L + 1,): line i is ids[offsets[i]:offsets[i + 1]]
    <set>.kept.npy            int64 (K,): the lines a training corpus keeps after filtering

`open_prepared` maps those files read-only (np.memmap), so every DDP process shares one copy in
the page cache and none tokenizes. `stale_reason` says why a folder no longer matches a recipe
(a corpus file, the tokenizer or a data/tokenizer key changed); training re-prepares then and
logs why, and never silently reuses a stale folder.

A multilingual recipe (several directions) puts the target-language token (`language_token`)
before every source sentence of training and validation; its id is added when batches are
collated, so one encoded file serves every direction it appears in.

Shape letters: N training pairs of an epoch, L lines of a file, K kept pairs of one corpus.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt.config import Corpus, Recipe
from nmt.data import (
    Batch,
    FilterReport,
    ParallelCorpus,
    collate_source,
    collate_target,
    filter_lengths,
    iter_lines,
    iter_tsv_column,
    make_batches,
    read_corpus,
)
from nmt.errors import DataError
from nmt.languages import language_token
from nmt.tokenizer import EncoderPool, Tokenizer, file_sha256, train_tokenizers

log = logging.getLogger("nmt.dataset")

FORMAT = 1
MANIFEST = "manifest.json"


# --------------------------------------------------------------------------- what goes in


@dataclass(frozen=True)
class Text:
    """One side of a corpus: a file, or one column of a TSV file, and the tokenizer it needs."""

    path: Path
    column: int | None  # None: a plain text file; 0 / 1: source / target column of a TSV
    side: str  # "src" or "tgt": which tokenizer encodes it

    def lines(self) -> Iterator[str]:
        return iter_lines(self.path) if self.column is None else iter_tsv_column(self.path, self.column)

    def __str__(self) -> str:
        return str(self.path) if self.column is None else f"{self.path} (column {self.column + 1})"


def corpus_texts(corpus: Corpus) -> tuple[Text, Text]:
    config = corpus.config
    if config.tsv is not None:
        return Text(config.tsv, 0, "src"), Text(config.tsv, 1, "tgt")
    assert config.src is not None and config.tgt is not None  # guaranteed by CorpusConfig
    return Text(config.src, None, "src"), Text(config.tgt, None, "tgt")


def _settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe keys that shape a prepared dataset; any change makes it stale."""
    data = recipe.data.model_dump(mode="json", exclude={"prepared"})
    return {"format": FORMAT, "data": data, "tokenizer": recipe.tokenizer.model_dump(mode="json")}


def file_identity(path: Path) -> dict[str, Any]:
    """Size, modification time, sha256 and line count of a corpus file (streamed in blocks, a .gz
    file decompressed as it is read); DataError naming the file when it is missing or empty."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    stat = path.stat()
    lines, last, text = 0, b"\n", False
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last, text = block[-1:], text or bool(block.strip())
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: not a valid gzip file ({error})") from None
    if not text:
        raise DataError(f"{path}: file is empty")
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(path),
        "lines": lines + (last != b"\n"),  # a last line without its newline counts too
    }


def _changed(path: Path, recorded: dict[str, Any]) -> bool:
    """Whether a file differs from its recorded identity (sha256 only read when size and mtime
    do not already tell: same size, other mtime)."""
    if not path.is_file():
        return True
    stat = path.stat()
    if stat.st_size != recorded["size"]:
        return True
    if stat.st_mtime_ns == recorded["mtime_ns"]:
        return False
    return file_sha256(path) != recorded["sha256"]


def tokenizer_names(recipe: Recipe) -> tuple[str, str]:
    """File names of the source and target tokenizer (one name twice when joint)."""
    if recipe.tokenizer.joint:
        return "spm.model", "spm.model"
    direction = recipe.data.directions[0]  # one direction: several need a joint tokenizer
    return f"spm.{direction.source}.model", f"spm.{direction.target}.model"


# --------------------------------------------------------------------------- staleness


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a prepared-dataset manifest of format {FORMAT}")
    return manifest


def _differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [k for key in keys for k in _differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def stale_reason(recipe: Recipe, folder: Path) -> str | None:
    """Why `folder` does not hold `recipe`'s prepared data (missing, or made from another corpus
    or other settings); None when it does. A changed tokenizer is `check_tokenizers`' business."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "not prepared yet"
    changed = _differing_keys(manifest["settings"], _settings(recipe))
    if changed:
        return f"recipe keys changed since it was prepared: {', '.join(changed[:6])}"
    for name, recorded in manifest["files"].items():
        if _changed(Path(name), recorded):
            return f"{name} changed since it was prepared"
    for entry in manifest["texts"].values():
        for suffix in (".ids", ".offsets.npy"):
            if not (folder / f"{entry['key']}{suffix}").is_file():
                return f"{folder / (entry['key'] + suffix)} is missing"
    for name in manifest["tokenizers"]:
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
    return None


def check_tokenizers(folder: Path, given: Sequence[Path], key: str) -> None:
    """DataError naming the manifest and `key` when `folder` was prepared with tokenizers other
    than the `given` files (a run's own, which its weights were trained with)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return
    for path in given:
        recorded = manifest["tokenizers"].get(path.name)
        if recorded is not None and path.is_file() and file_sha256(path) != recorded:
            raise DataError(
                f"{folder / MANIFEST}: prepared with another tokenizer than {path} ({key}); "
                "prepare it again (`nmt data prepare`) or point the key at another folder"
            )


# --------------------------------------------------------------------------- preparing


def _write_text(pool: EncoderPool, text: Text, tokenizer: Tokenizer, stem: Path, dtype: np.dtype) -> int:
    """Encode one text into ``stem.ids`` and ``stem.offsets.npy``; returns its number of lines."""
    lengths: list[np.ndarray] = []
    tmp = stem.with_name(f".{stem.name}.ids.tmp")
    with open(tmp, "wb") as out:
        for chunk_lengths, flat in pool.encode(tokenizer.path, text.lines()):
            out.write(flat.astype(dtype).tobytes())
            lengths.append(chunk_lengths)
    offsets = np.zeros(sum(len(part) for part in lengths) + 1, dtype=np.int64)  # (L + 1,)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    np.save(stem.with_name(f"{stem.name}.offsets.npy"), offsets)
    os.replace(tmp, stem.with_name(f"{stem.name}.ids"))
    return len(offsets) - 1


def _pair_hashes(src: MappedText, tgt: MappedText, lines: np.ndarray) -> np.ndarray:
    """(K,) uint64: a 64-bit polynomial hash of each pair's token ids (what dedup compares)."""
    return src.hashes(lines) * np.uint64(0x9E3779B97F4A7C15) + tgt.hashes(lines)


def _keep(src: MappedText, tgt: MappedText, recipe: Recipe) -> tuple[np.ndarray, FilterReport]:
    """(K,) int64 lines of a training corpus that pass the filter (and dedup), and the report."""
    kept, report = filter_lengths(src.lengths, tgt.lengths, recipe.data.max_tokens, recipe.data.max_ratio)
    if recipe.data.dedup and len(kept):
        _, first = np.unique(_pair_hashes(src, tgt, kept), return_index=True)
        deduped = kept[np.sort(first)]
        report = FilterReport(
            report.total,
            len(deduped),
            report.empty,
            report.too_long,
            report.bad_ratio,
            report.max_tokens,
            report.max_ratio,
            duplicates=len(kept) - len(deduped),
        )
        kept = deduped
    return kept, report


def _train_tokenizers(recipe: Recipe, folder: Path) -> tuple[Tokenizer, Tokenizer]:
    """Train the recipe's tokenizer(s) into `folder` on a sample of the training text files (each
    distinct file streamed once), with the language tokens of a multilingual recipe."""
    sides: dict[str, dict[Text, None]] = {"src": {}, "tgt": {}}
    for corpus in recipe.data.train_corpora:
        for text in corpus_texts(corpus):
            sides[text.side][text] = None
    if recipe.tokenizer.joint:  # a file on both sides (multi-way data) is read once
        sides["tgt"] = {t: None for t in sides["tgt"] if Text(t.path, t.column, "src") not in sides["src"]}

    def stream(texts: dict[Text, None]) -> Iterator[str]:
        for text in texts:
            yield from text.lines()

    symbols = (
        [language_token(lang) for lang in recipe.data.target_languages] if recipe.data.multilingual else []
    )
    src_name, tgt_name = tokenizer_names(recipe)
    log.info(
        "training SentencePiece (%s, %d pieces) on at most %s sentences",
        recipe.tokenizer.type,
        recipe.tokenizer.vocab_size,
        f"{recipe.tokenizer.sample_sentences:,}",
    )
    return train_tokenizers(
        recipe.tokenizer,
        stream(sides["src"]),
        stream(sides["tgt"]),
        folder,
        src_name.removeprefix("spm.").removesuffix(".model"),
        tgt_name.removeprefix("spm.").removesuffix(".model"),
        symbols,
    )


def prepare(
    recipe: Recipe,
    folder: Path,
    tokenizers: Sequence[Path] | None = None,
    workers: int | None = None,
    reason: str = "asked to",
) -> dict[str, Any]:
    """Prepare `recipe`'s data into `folder` (see the module docstring); returns the manifest.

    `tokenizers`: existing source and target model files to use (a run's own); otherwise the
    tokenizer is trained here. `workers`: encoding processes (default: the CPU count). `reason`
    is logged once the corpus files are found and aligned (a bad file is one line of error).
    The manifest is written last, so a folder without one was never finished.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    train_sets, valid_sets = recipe.data.train_corpora, recipe.data.valid_sets
    files = {
        str(text.path): file_identity(text.path)
        for corpus in (*train_sets, *valid_sets)
        for text in corpus_texts(corpus)
    }
    for corpus in (*train_sets, *valid_sets):  # before any work: misaligned files fail at once
        src_text, tgt_text = corpus_texts(corpus)
        src_lines, tgt_lines = files[str(src_text.path)]["lines"], files[str(tgt_text.path)]["lines"]
        if src_lines != tgt_lines:
            raise DataError(
                f"{src_text.path} has {src_lines:,} lines but {tgt_text.path} has {tgt_lines:,} ({corpus.key})"
            )
    log.info("preparing the data in %s: %s", folder, reason)
    src_name, tgt_name = tokenizer_names(recipe)
    if tokenizers:
        for source, name in zip(tokenizers, (src_name, tgt_name), strict=True):
            if Path(source).resolve() != (folder / name).resolve():
                shutil.copyfile(source, folder / name)
        src_tok, tgt_tok = Tokenizer.load(folder / src_name), Tokenizer.load(folder / tgt_name)
    else:
        src_tok, tgt_tok = _train_tokenizers(recipe, folder)
    by_side = {"src": src_tok, "tgt": tgt_tok}
    hashes = {path.name: file_sha256(path) for path in {src_tok.path, tgt_tok.path}}
    dtype = np.dtype(np.uint16 if max(src_tok.vocab_size, tgt_tok.vocab_size) <= 1 << 16 else np.int32)

    texts: dict[str, dict[str, Any]] = {}  # one entry per distinct (file, column, tokenizer)
    with EncoderPool(workers or os.cpu_count() or 1) as pool:
        for corpus in (*train_sets, *valid_sets):
            for text in corpus_texts(corpus):
                tokenizer = by_side[text.side]
                name = _text_name(text, files[str(text.path)]["sha256"], hashes[tokenizer.path.name])
                if name in texts:
                    continue
                log.info("encoding %s", text)
                lines = _write_text(pool, text, tokenizer, folder / f"text-{name}", dtype)
                texts[name] = {"key": f"text-{name}", "file": str(text), "lines": lines}

    corpora: dict[str, Any] = {"train": [], "valid": []}
    for section, sets in (("train", train_sets), ("valid", valid_sets)):
        for corpus in sets:
            src_text, tgt_text = corpus_texts(corpus)
            src_key = _text_name(src_text, files[str(src_text.path)]["sha256"], hashes[src_tok.path.name])
            tgt_key = _text_name(tgt_text, files[str(tgt_text.path)]["sha256"], hashes[tgt_tok.path.name])
            entry: dict[str, Any] = {
                "name": corpus.name,
                "direction": [corpus.direction.source, corpus.direction.target],
                "weight": corpus.weight,
                "src": f"text-{src_key}",
                "tgt": f"text-{tgt_key}",
            }
            if section == "train":
                src, tgt = (
                    MappedText(folder, f"text-{src_key}", dtype),
                    MappedText(folder, f"text-{tgt_key}", dtype),
                )
                kept, report = _keep(src, tgt, recipe)
                if len(kept) == 0:
                    raise DataError(f"{corpus.key}: no sentence pair is left after filtering ({report})")
                np.save(folder / f"train-{_safe(corpus.name)}.kept.npy", kept)
                entry["kept"] = f"train-{_safe(corpus.name)}.kept.npy"
                entry["report"] = report.__dict__
                log.info("%s (%s): %s", corpus.name, corpus.direction, report)
            corpora[section].append(entry)

    manifest = {
        "format": FORMAT,
        "settings": _settings(recipe),
        "tokenizers": hashes,
        "dtype": dtype.name,
        "language_tokens": recipe.data.multilingual,
        "files": files,
        "texts": texts,
        "corpora": corpora,
    }
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def _text_name(text: Text, file_hash: str, tokenizer_hash: str) -> str:
    column = "" if text.column is None else str(text.column)
    return hashlib.sha256(f"{file_hash}:{column}:{tokenizer_hash}".encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    """A corpus name as a file-name part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def ensure_prepared(
    recipe: Recipe,
    folder: Path,
    tokenizers: Sequence[Path] | None,
    explicit: bool,
    workers: int | None = None,
) -> None:
    """Prepare `folder` unless it already holds `recipe`'s data; log why when it (re-)prepares.

    `tokenizers`: the run's own model files when it has them; a folder prepared with others is
    an error when the recipe names the folder (`explicit`: ``data.prepared``), and is prepared
    again with the run's tokenizer when it is the run's own.
    """
    reason = stale_reason(recipe, folder)
    if tokenizers and reason is None:
        try:
            check_tokenizers(folder, tokenizers, "data.prepared")
        except DataError:
            if explicit:
                raise
            reason = "it was made with another tokenizer than the run's"
    elif tokenizers and explicit:
        check_tokenizers(folder, tokenizers, "data.prepared")
    if reason is None:
        log.info("using the prepared data in %s", folder)
        return
    prepare(recipe, folder, tokenizers, workers, reason)


# --------------------------------------------------------------------------- reading


class MappedText:
    """One encoded text, memory-mapped: line i's ids are ``ids[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, folder: Path, key: str, dtype: np.dtype | str):
        ids_path, offsets_path = folder / f"{key}.ids", folder / f"{key}.offsets.npy"
        for path in (ids_path, offsets_path):
            if not path.is_file():
                raise DataError(f"{path}: missing from the prepared dataset; prepare it again")
        self.offsets = np.load(offsets_path, mmap_mode="r")  # (L + 1,) int64
        size = int(self.offsets[-1])
        self.ids = (  # (sum of lengths,); np.memmap refuses an empty file
            np.memmap(ids_path, dtype=dtype, mode="r", shape=(size,)) if size else np.zeros(0, dtype=dtype)
        )

    @property
    def lengths(self) -> np.ndarray:
        """(L,) int64 tokens per line."""
        return np.diff(self.offsets)

    def line(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def hashes(self, lines: np.ndarray, block: int = 200_000) -> np.ndarray:
        """(K,) uint64 polynomial hashes of the given lines' ids, `block` lines at a time."""
        out = np.empty(len(lines), dtype=np.uint64)
        for start in range(0, len(lines), block):
            part = lines[start : start + block]
            begin, end = self.offsets[part], self.offsets[part + 1]
            lengths = end - begin
            positions = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            gather = np.repeat(begin, lengths) + positions
            base = np.uint64(1_000_003)
            powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, base, dtype=np.uint64))
            terms = (self.ids[gather].astype(np.uint64) + np.uint64(1)) * powers[positions]
            sums = np.zeros(len(part), dtype=np.uint64)
            nonempty = lengths > 0
            if terms.size:
                starts = (np.cumsum(lengths) - lengths)[nonempty]
                sums[nonempty] = np.add.reduceat(terms, starts)
            out[start : start + len(part)] = sums + lengths.astype(np.uint64)
        return out


@dataclass(frozen=True)
class TrainCorpus:
    """One training corpus of a prepared dataset: its kept pairs and the source prefix."""

    name: str
    weight: float
    src: MappedText
    tgt: MappedText
    kept: np.ndarray  # (K,) int64 lines
    prefix: tuple[int, ...]  # () or (the target-language token,)


class TrainingSet:
    """The training pairs of every corpus, batched per epoch: what the training loop takes.

    Global pair index g in [0, N) is corpus c's kept pair ``g - starts[c]``. An epoch draws from
    each corpus `epoch_sizes()` pairs (see `DataConfig`) and batches them with `make_batches`;
    everything random comes from ``default_rng([seed, epoch])``, so each process of a DDP job
    computes the same batches.
    """

    def __init__(self, corpora: Sequence[TrainCorpus], temperature: float):
        self.corpora = list(corpora)
        self.temperature = temperature
        sizes = np.array([len(c.kept) for c in self.corpora], dtype=np.int64)
        self.starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))  # (C,)
        self.src_lens = np.concatenate(  # (N,) int64, the language token included
            [c.src.lengths[c.kept] + len(c.prefix) for c in self.corpora]
        )
        self.tgt_lens = np.concatenate([c.tgt.lengths[c.kept] for c in self.corpora])  # (N,) int64

    def __len__(self) -> int:
        return len(self.src_lens)

    def probabilities(self) -> np.ndarray:
        """(C,) p_i proportional to (weight_i * n_i) ** (1 / temperature)."""
        mass = np.array([c.weight * len(c.kept) for c in self.corpora]) ** (1.0 / self.temperature)
        return mass / mass.sum()

    def epoch_sizes(self) -> np.ndarray:
        """(C,) pairs drawn from each corpus per epoch: round(N * p_i), at least one."""
        return np.maximum(np.rint(len(self) * self.probabilities()).astype(np.int64), 1)

    def epoch_pairs(self, seed: int, epoch: int) -> np.ndarray:
        """(N',) global indices of one epoch's pairs: every pair once with one corpus; otherwise a
        corpus drawn m times its size gives each of its pairs floor(m / n) times, and the rest
        without replacement."""
        if len(self.corpora) == 1:
            return np.arange(len(self), dtype=np.int64)
        rng = np.random.default_rng([seed, epoch, 1])
        drawn = []
        for corpus, start, size in zip(self.corpora, self.starts, self.epoch_sizes(), strict=True):
            n = len(corpus.kept)
            local = np.concatenate(
                [np.tile(np.arange(n, dtype=np.int64), size // n), rng.choice(n, size % n, replace=False)]
            )
            drawn.append(local + start)
        return np.concatenate(drawn)

    def batches(self, batch_tokens: int, seed: int, epoch: int) -> list[np.ndarray]:
        """One epoch of batches, each an int64 array of global pair indices (see `make_batches`)."""
        pairs = self.epoch_pairs(seed, epoch)
        batches = make_batches(self.src_lens[pairs], self.tgt_lens[pairs], batch_tokens, seed, epoch)
        return [pairs[batch] for batch in batches]

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Source (prefix included) and target ids of global pair `index`."""
        which = int(np.searchsorted(self.starts, index, side="right")) - 1
        corpus = self.corpora[which]
        line = int(corpus.kept[index - self.starts[which]])
        src = corpus.src.line(line)
        if corpus.prefix:
            src = np.concatenate((np.array(corpus.prefix, dtype=src.dtype), src))
        return src, corpus.tgt.line(line)

    def collate(self, indices: Sequence[int]) -> Batch:
        """The tensors of the pairs at `indices`, in that order."""
        pairs = [self.pair(int(i)) for i in indices]
        src, src_lengths = collate_source([src for src, _ in pairs])
        tgt_in, tgt_out = collate_target([tgt for _, tgt in pairs])
        ntokens = int(self.tgt_lens[np.asarray(indices)].sum()) + len(indices)  # + one EOS per sentence
        return Batch(src, src_lengths, tgt_in, tgt_out, ntokens)


@dataclass
class ValidSet:
    """One validation set: its pairs (sources with the language token, if any) and its texts."""

    name: str
    direction: tuple[str, str]
    pairs: ParallelCorpus
    src_ids: list[list[int]]
    references: list[str]


@dataclass
class PreparedData:
    train: TrainingSet
    valid: list[ValidSet]
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    manifest: dict[str, Any]


def open_prepared(recipe: Recipe, folder: Path) -> PreparedData:
    """Map a prepared folder (read-only: nothing is tokenized); the validation texts are read."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(f"{folder / MANIFEST}: not found; run `nmt data prepare` first")
    src_name, tgt_name = tokenizer_names(recipe)
    src_tok, tgt_tok = Tokenizer.load(folder / src_name), Tokenizer.load(folder / tgt_name)
    dtype = manifest["dtype"]
    multilingual = manifest["language_tokens"]

    def prefix(direction: Sequence[str]) -> tuple[int, ...]:
        return (src_tok.piece_id(language_token(direction[1])),) if multilingual else ()

    train = TrainingSet(
        [
            TrainCorpus(
                entry["name"],
                entry["weight"],
                MappedText(folder, entry["src"], dtype),
                MappedText(folder, entry["tgt"], dtype),
                np.load(folder / entry["kept"], mmap_mode="r"),
                prefix(entry["direction"]),
            )
            for entry in manifest["corpora"]["train"]
        ],
        recipe.data.temperature,
    )
    valid = []
    for entry, corpus in zip(manifest["corpora"]["valid"], recipe.data.valid_sets, strict=True):
        src, tgt = MappedText(folder, entry["src"], dtype), MappedText(folder, entry["tgt"], dtype)
        head = list(prefix(entry["direction"]))
        src_ids = [head + src.line(i).tolist() for i in range(len(src.lengths))]
        tgt_ids = [tgt.line(i).tolist() for i in range(len(tgt.lengths))]
        _, references = read_corpus(corpus.config)
        valid.append(
            ValidSet(
                entry["name"],
                tuple(entry["direction"]),
                ParallelCorpus(src_ids, tgt_ids),
                src_ids,
                references,
            )
        )
    return PreparedData(train, valid, src_tok, tgt_tok, manifest)


def report_lines(manifest: dict[str, Any]) -> list[str]:
    """One line per training corpus: its name, direction and filter report."""
    lines = []
    for entry in manifest["corpora"]["train"]:
        report = FilterReport(**entry["report"])
        lines.append(f"{entry['name']} ({'-'.join(entry['direction'])}): {report}")
    return lines
