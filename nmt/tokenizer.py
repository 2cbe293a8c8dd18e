"""Subword tokenizers: train SentencePiece models on the training text, and use them.

Every model we train puts the special tokens at the fixed ids of `nmt.specials`
(PAD 0, UNK 1, BOS 2, EOS 3), so models, batching and search never ask a tokenizer for them.
A joint tokenizer (one model for both languages) lets the Transformer share one embedding matrix.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import multiprocessing
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import ConfigError, DataError
from nmt.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# SentencePiece splits the corpus into one chunk per thread and sums the chunks' statistics, so
# the learned scores (and hence the ids) depend on the thread count. A fixed count keeps a model
# identical across machines; threads beyond the core count only share the cores.
TRAIN_THREADS = 16
# the sample of `tokenizer.sample_sentences` is drawn with this seed (and SentencePiece's own
# generator seeded with it), so a corpus gives the same model on every run
SAMPLE_SEED = 1


class Tokenizer:
    """A trained SentencePiece model: text <-> lists of token ids (specials at the fixed ids)."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path):
        self.processor = processor
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: SentencePiece model not found")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(path.read_bytes())
        except (OSError, RuntimeError) as error:
            raise DataError(f"{path}: not a SentencePiece model ({error})") from None
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def piece_id(self, piece: str) -> int:
        """The id of one piece (a language token, say); DataError naming the model when it has none."""
        found = self.processor.piece_to_id(piece)
        if found == UNK_ID or self.processor.id_to_piece(found) != piece:
            raise DataError(f"{self.path}: the tokenizer has no piece {piece!r}")
        return found

    def file_hash(self) -> str:
        """sha256 of the model file: what a prepared dataset records to say which tokenizer made it."""
        return file_sha256(self.path)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without BOS or EOS."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        return self.processor.encode(list(texts), out_type=int)

    def pieces(self, ids: list[int]) -> list[str]:
        """The pieces of one id sequence, as SentencePiece writes them ("▁" starts a word)."""
        return [self.processor.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence; stops at the first EOS and skips PAD and BOS.

        UNK is kept (SentencePiece writes it as ``⁇``) so that an unknown word stays visible.
        """
        cleaned = []
        for seq in ids:
            seq = [int(i) for i in seq]
            if EOS_ID in seq:
                seq = seq[: seq.index(EOS_ID)]
            cleaned.append([i for i in seq if i not in (PAD_ID, BOS_ID)])
        # one sequence per call: given a list, SentencePiece starts a pool of threads at each call,
        # which costs some 15 times the decoding of a short sentence, and the translator decodes
        # one n-best list (often of one) at a time
        return [self.processor.decode(seq) for seq in cleaned]

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sample_lines(texts: Iterable[str], size: int, seed: int = SAMPLE_SEED) -> list[str]:
    """A uniform sample of at most `size` of the streamed `texts` (reservoir sampling, seeded:
    the same stream gives the same sample); all of them, in order, when there are no more."""
    rng = random.Random(seed)
    sample: list[str] = []
    for seen, text in enumerate(texts):
        if seen < size:
            sample.append(text)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = text
    return sample


def _train(cfg: TokenizerConfig, texts: Iterable[str], path: Path, symbols: Sequence[str] = ()) -> Tokenizer:
    """Train one model on a uniform sample of at most `cfg.sample_sentences` of `texts` (streamed:
    only the sample is kept) and write it to `path` atomically. `symbols` become user-defined
    pieces: one id each, never split (the language tokens of a multilingual model).

    SentencePiece's memory grows with the sample (docs/training.md measures it), so
    `sample_sentences` is also what bounds the memory of preparing.
    """
    sample = sample_lines(texts, cfg.sample_sentences)
    model = io.BytesIO()
    spm.set_random_generator_seed(SAMPLE_SEED)
    extra: dict[str, Any] = {"user_defined_symbols": list(symbols)} if symbols else {}
    try:
        spm.SentencePieceTrainer.train(
            # handed over one by one and dropped here: SentencePiece keeps its own copy
            sentence_iterator=(sample.pop() for _ in range(len(sample))),
            model_writer=model,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            hard_vocab_limit=False,  # a corpus too small for vocab_size gives a smaller vocabulary
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=TRAIN_THREADS,
            minloglevel=2,  # errors only
            **extra,
        )
    except RuntimeError as error:
        raise DataError(f"{path}: could not train tokenizer.{cfg.type} ({error})") from None

    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    specials = [processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()]
    assert specials == [PAD_ID, UNK_ID, BOS_ID, EOS_ID], specials

    # Write next to the target and rename, so a crash never leaves half a model under the real name.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(model.getvalue())
    os.replace(tmp, path)
    return Tokenizer(processor, path)


def train_tokenizers(
    cfg: TokenizerConfig,
    src_texts: Iterable[str],
    tgt_texts: Iterable[str],
    out_dir: Path,
    src_lang: str,
    tgt_lang: str,
    symbols: Sequence[str] = (),
) -> tuple[Tokenizer, Tokenizer]:
    """Source and target tokenizers trained on the given texts (iterables: they are streamed).

    Joint: one model on both sides, ``out_dir/spm.model``, returned twice (the same object), with
    `symbols` as user-defined pieces. Otherwise ``out_dir/spm.{src_lang}.model`` and
    ``out_dir/spm.{tgt_lang}.model`` (no symbols: language tokens need a joint model).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.joint:
        joint = _train(cfg, itertools.chain(src_texts, tgt_texts), out_dir / "spm.model", symbols)
        return joint, joint
    if src_lang == tgt_lang:
        raise ConfigError(f"data.src_lang and data.tgt_lang are both {src_lang!r}; use tokenizer.joint")
    src = _train(cfg, src_texts, out_dir / f"spm.{src_lang}.model")
    tgt = _train(cfg, tgt_texts, out_dir / f"spm.{tgt_lang}.model")
    return src, tgt


# --------------------------------------------------------------------------- encoding in workers

_WORKER_MODELS: dict[str, spm.SentencePieceProcessor] = {}


def _encode_chunk(model: str, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """In a worker: (lengths (L,) int64, flat ids (sum of lengths,) int32) of `lines`."""
    processor = _WORKER_MODELS.get(model)
    if processor is None:
        processor = _WORKER_MODELS[model] = spm.SentencePieceProcessor(model_file=model)
    encoded = processor.encode(lines, out_type=int)
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(lengths.sum()))
    return lengths, flat


class EncoderPool:
    """Encodes streams of lines in worker processes, in order, holding a bounded number of chunks.

    ``with EncoderPool(workers) as pool: for lengths, flat in pool.encode(model_path, lines): ...``
    Workers are spawned (not forked: the caller may hold threads, a DDP process group's say) and
    import only this module; with ``workers <= 1``, or a text of one chunk, the calling process
    encodes.
    At most ``2 * workers`` chunks are in flight, so memory does not grow with the corpus.
    """

    CHUNK_LINES = 10_000

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def encode(self, model: Path, lines: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(lengths (L,), flat ids) per chunk of `lines`, in the order of the lines. The workers
        start with the first text of more than one chunk (a small corpus is encoded here)."""
        stream = iter(lines)
        chunks = iter(lambda: list(itertools.islice(stream, self.CHUNK_LINES)), [])
        first = next(chunks, None)
        if first is None:
            return
        second = next(chunks, None)
        if second is None or self.workers <= 1:
            for chunk in itertools.chain([first], [] if second is None else [second], chunks):
                yield _encode_chunk(str(model), chunk)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        pending: collections.deque[Future] = collections.deque()
        for chunk in itertools.chain([first, second], chunks):
            pending.append(self._pool.submit(_encode_chunk, str(model), chunk))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
