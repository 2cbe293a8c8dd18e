"""Subword tokenizers: train SentencePiece models on the training text, and use them.

Every model we train puts the special tokens at the fixed ids of `nmt.specials`
(PAD 0, UNK 1, BOS 2, EOS 3), so models, batching and search never ask a tokenizer for them.
A joint tokenizer (one model for both languages) lets the Transformer share one embedding matrix.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import ConfigError, DataError
from nmt.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# SentencePiece splits the corpus into one chunk per thread and sums the chunks' statistics, so
# the learned scores (and hence the ids) depend on the thread count. A fixed count keeps a model
# identical across machines; threads beyond the core count only share the cores.
TRAIN_THREADS = 16


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
        return self.processor.decode(cleaned)

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def _train(cfg: TokenizerConfig, texts: list[str], path: Path) -> Tokenizer:
    """Train one model on `texts` and write it to `path` atomically."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
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
    src_texts: list[str],
    tgt_texts: list[str],
    out_dir: Path,
    src_lang: str,
    tgt_lang: str,
) -> tuple[Tokenizer, Tokenizer]:
    """Source and target tokenizers trained on the given texts.

    Joint: one model on both sides, ``out_dir/spm.model``, returned twice (the same object).
    Otherwise ``out_dir/spm.{src_lang}.model`` and ``out_dir/spm.{tgt_lang}.model``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.joint:
        joint = _train(cfg, [*src_texts, *tgt_texts], out_dir / "spm.model")
        return joint, joint
    if src_lang == tgt_lang:
        raise ConfigError(f"data.src_lang and data.tgt_lang are both {src_lang!r}; use tokenizer.joint")
    src = _train(cfg, src_texts, out_dir / f"spm.{src_lang}.model")
    tgt = _train(cfg, tgt_texts, out_dir / f"spm.{tgt_lang}.model")
    return src, tgt
