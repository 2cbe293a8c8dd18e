"""Text in, text out: tokenize, batch by length, search, detokenize, restore the order.

`Translator` wraps a model with the seam `nmt.models.step.Seq2Seq` (a PyTorch model, the ONNX
Runtime backend), which `nmt.search.beam_search` drives, or a `SearchEngine`, with a beam search
of its own (the CTranslate2 backend), together with its tokenizers. The CLI, evaluation, validation
during training and the service all translate through it.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from nmt.bundle import Bundle
from nmt.config import SearchConfig
from nmt.data import collate_source
from nmt.models import Seq2Seq
from nmt.search import Hypothesis, beam_search
from nmt.tokenizer import Tokenizer

log = logging.getLogger("nmt.translate")


@runtime_checkable
class SearchEngine(Protocol):
    """An engine that searches on its own: `nmt.search.beam_search`'s arguments and results."""

    def beam_search(
        self, src: Tensor, src_lengths: Tensor, options: SearchConfig, max_len_cap: int | None = None
    ) -> list[list[Hypothesis]]: ...


@dataclass(frozen=True)
class Translation:
    text: str
    score: float  # length-normalised log-probability
    log_prob: float


def length_sorted_batches(lengths: list[int], max_sentences: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, longest first, within both limits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for index in order:
        longest = lengths[batch[0]] if batch else lengths[index]
        if batch and (len(batch) >= max_sentences or (len(batch) + 1) * longest > max_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


class Translator:
    def __init__(
        self,
        model: Seq2Seq | SearchEngine,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        search: SearchConfig,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        batch_tokens: int = 8192,
        max_len_cap: int | None = None,
    ):
        self.model = model
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.search = search
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.max_len_cap = max_len_cap

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        backend: str = "torch",
        engine: dict[str, Any] | None = None,
        **kwargs,
    ) -> Translator:
        """A translator on the bundle's PyTorch model, or on one of its exports: backend "onnx"
        (ONNX Runtime on BUNDLE/onnx/) or "ctranslate2" (CTranslate2 on BUNDLE/ct2/, Transformers
        only). `engine` options go to the backend (`OnnxModel`: threads, optimization, spinning;
        `CTranslate2Model`: compute_type, threads); the other keyword arguments to `Translator`."""
        model: Seq2Seq | SearchEngine
        if backend == "onnx":
            from nmt.backends.onnx import OnnxModel

            model = OnnxModel.from_bundle(bundle, device, **(engine or {}))
        elif backend == "ctranslate2":
            from nmt.backends.ctranslate2 import CTranslate2Model

            model = CTranslate2Model.from_bundle(bundle, device, **(engine or {}))
        else:
            model = bundle.load_model(device)
        cap = bundle.model_config.position_limit
        return cls(
            model,
            bundle.src_tokenizer,
            bundle.tgt_tokenizer,
            bundle.search,
            device,
            max_len_cap=cap,
            **kwargs,
        )

    @property
    def max_source_tokens(self) -> int | None:
        """The most tokens a source sentence may have (EOS excluded); None: the model sets no limit."""
        return None if self.max_len_cap is None else self.max_len_cap - 1

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Source token ids of each text (NFC, trimmed), as `translate_ids` takes them."""
        return self.src_tokenizer.encode([unicodedata.normalize("NFC", text.strip()) for text in texts])

    def translate(self, texts: list[str], search: SearchConfig | None = None) -> list[list[Translation]]:
        """An n-best list for each text, in input order. Empty texts translate to ''."""
        return self.translate_ids(self.encode(texts), search)

    def translate_ids(
        self, ids: list[list[int]], search: SearchConfig | None = None
    ) -> list[list[Translation]]:
        """As `translate`, for texts already encoded by `encode` (a sentence over the model's limit
        is cut to it, with a warning: callers that must not cut check `max_source_tokens` first)."""
        search = search or self.search
        ids = list(ids)
        if self.max_len_cap is not None:  # the model has no positions beyond its cap (EOS included)
            for i, seq in enumerate(ids):
                if len(seq) >= self.max_len_cap:
                    log.warning(
                        "input %d has %d tokens; translating its first %d",
                        i + 1,
                        len(seq),
                        self.max_len_cap - 1,
                    )
                    ids[i] = seq[: self.max_len_cap - 1]
        results: list[list[Translation]] = [[Translation("", 0.0, 0.0)] for _ in ids]
        todo = [i for i, seq in enumerate(ids) if seq]
        lengths = [len(ids[i]) + 1 for i in todo]
        for batch in length_sorted_batches(lengths, self.batch_size, self.batch_tokens):
            rows = [todo[i] for i in batch]
            src, src_lengths = collate_source([ids[i] for i in rows])
            src, src_lengths = src.to(self.device), src_lengths.to(self.device)
            if isinstance(self.model, SearchEngine):  # a search of its own (CTranslate2)
                nbest = self.model.beam_search(src, src_lengths, search, self.max_len_cap)
            else:
                nbest = beam_search(self.model, src, src_lengths, search, self.max_len_cap)
            for row, hypotheses in zip(rows, nbest, strict=True):
                texts_out = self.tgt_tokenizer.decode([h.tokens for h in hypotheses])
                found = [
                    Translation(t, h.score, h.log_prob) for t, h in zip(texts_out, hypotheses, strict=True)
                ]
                results[row] = found or [Translation("", float("-inf"), float("-inf"))]
        return results

    def translate_best(self, texts: list[str], search: SearchConfig | None = None) -> list[str]:
        """The best translation of each text, in input order."""
        return [nbest[0].text for nbest in self.translate(texts, search)]
