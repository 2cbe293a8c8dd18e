"""Text in, text out: tokenize, batch by length, search, detokenize, restore the order.

`Translator` wraps a model with the seam `nmt.models.step.Seq2Seq` (a PyTorch model, the ONNX
Runtime backend), which `nmt.search.beam_search` drives, or a `SearchEngine`, with a beam search
of its own (the CTranslate2 backend), together with its tokenizers. The CLI, evaluation, validation
during training and the service all translate through it.

Asked for `alignments`, a translator on a model with attention also returns each translation's
attention over its source (pieces and weights, `Attention`) and its word alignment
(`nmt.alignment`); the search then carries the attention along, which it does not otherwise.

A translator on a multilingual model (`language_ids`: target language -> the id of its `<2xx>`
token, see `nmt.languages`) puts the target's token before each source sentence's pieces in
`encode(texts, target)`. The token is no word of the source: attention and alignments leave its
column out.

A translator with a `shortlist` (`nmt.shortlist`) decodes each batch over the target ids its
sources' shortlist rows allow (`Shortlist.vocabulary`, given to the search); on CTranslate2 the
same table runs as CTranslate2's vocabulary map (`use_vmap`, see `nmt.backends.ctranslate2`).
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from nmt.alignment import Alignment, word_alignment
from nmt.bundle import Bundle
from nmt.config import SearchConfig
from nmt.data import collate_source
from nmt.errors import NmtError, NoAttention
from nmt.models import Seq2Seq
from nmt.search import Hypothesis, beam_search
from nmt.shortlist import Shortlist, require_shortlist
from nmt.tokenizer import Tokenizer

log = logging.getLogger("nmt.translate")


@runtime_checkable
class SearchEngine(Protocol):
    """An engine that searches on its own: `nmt.search.beam_search`'s arguments and results
    (without attention, which such an engine does not give: `attends` is False)."""

    @property
    def attends(self) -> bool: ...

    def beam_search(
        self, src: Tensor, src_lengths: Tensor, options: SearchConfig, max_len_cap: int | None = None
    ) -> list[list[Hypothesis]]: ...


@dataclass(frozen=True)
class Attention:
    """What a translation attended to: weights (T + 1, S + 1) of each target piece, then of the
    final EOS, over the source pieces and the source's EOS (each row sums to 1, less what went
    to a multilingual model's language token, which is not among the source pieces)."""

    src_pieces: list[str]  # S, without EOS
    tgt_pieces: list[str]  # T, without EOS
    weights: Tensor


@dataclass(frozen=True)
class Translation:
    text: str
    score: float  # length-normalised log-probability
    log_prob: float
    attention: Attention | None = None  # only when alignments were asked for
    alignment: Alignment | None = None  # (source word, target word) links, likewise


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
        no_attention: str = "the model has no attention, so it gives no alignments",
        language_ids: dict[str, int] | None = None,
        shortlist: Shortlist | None = None,
        workers: int = 1,
    ):
        if workers < 1:
            raise ValueError(f"workers: at least 1, not {workers}")
        self.model = model
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.search = search
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.max_len_cap = max_len_cap
        self.no_attention = no_attention  # what asking a translator without attention for it says
        self.language_ids = dict(language_ids or {})  # target language -> its token's id
        # a model without attention (CTranslate2) may hand requests for alignments to a second
        # translator on an engine with attention, made when first needed (`nmt.engines`)
        self.make_aligner: Callable[[], Translator] | None = None
        self.aligner_engine: str | None = None
        self._aligner: Translator | None = None
        self._aligner_lock = threading.Lock()
        # decode each batch over its shortlist vocabulary; a search engine (CTranslate2) was
        # given the same table when it was made, and applies it itself
        self.shortlist = shortlist
        # batches decoded at once, each on a thread of its own: the engines compute without the
        # GIL (ONNX Runtime runs concurrent calls on one session; CTranslate2 needs as many
        # replicas), so N workers with 1 thread each use N cores as N independent decoders do
        self.workers = workers

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        backend: str = "torch",
        engine: dict[str, Any] | None = None,
        shortlist: bool = False,
        **kwargs,
    ) -> Translator:
        """A translator on the bundle's PyTorch model, or on one of its exports: backend "onnx"
        (ONNX Runtime on BUNDLE/onnx/) or "ctranslate2" (CTranslate2 on BUNDLE/ct2/, Transformers
        only). `engine` options go to the backend (`OnnxModel`: threads, optimization, spinning;
        `CTranslate2Model`: compute_type, threads, replicas, at least `workers`; PyTorch: dtype,
        "float32" or "float16"); the other keyword
        arguments to `Translator`. `shortlist`: decode with the bundle's vocabulary shortlist (BundleError when
        it has none, or one built for another version or vocabulary; see `nmt.shortlist`).
        Backend "auto": the engine `nmt.engines.choose` picks for this device (its export made
        where missing), with `engine`'s threads."""
        if backend == "auto":
            from nmt.engines import choose, open_translator

            threads = (engine or {}).get("threads") or torch.get_num_threads()
            choice = choose(bundle, device, threads)
            log.info("%s: on %s (%s)", bundle.name, choice.engine, choice.reason)
            return open_translator(bundle, choice.engine, device, threads, shortlist=shortlist, **kwargs)
        model: Seq2Seq | SearchEngine
        table = require_shortlist(bundle) if shortlist else None
        no_attention = f"{bundle.name} is a model without attention ({bundle.model_config.architecture})"
        if backend == "onnx":
            from nmt.backends.onnx import OnnxModel

            model = OnnxModel.from_bundle(bundle, device, **(engine or {}))
            if table is not None:
                model.check_takes_vocabulary()  # an export made before shortlists says so now
            if bundle.model_config.attends:  # an export from before attention was exported
                no_attention = (
                    f"{model.folder} was exported without attention; run nmt export --model "
                    f"{bundle.path} --format onnx again"
                )
        elif backend == "ctranslate2":
            from nmt.backends.ctranslate2 import CTranslate2Model

            options = dict(engine or {})
            # a replica for each batch decoded at once: one serves one call at a time
            options["replicas"] = max(options.get("replicas", 1), kwargs.get("workers", 1))
            model = CTranslate2Model.from_bundle(bundle, device, shortlist=table, **options)
            no_attention = "the ctranslate2 backend gives no attention; use the torch or onnx backend"
        else:
            model = bundle.load_model(device)
            dtype = (engine or {}).get("dtype", "float32")  # the one option of this backend
            if dtype not in ("float32", "float16"):
                raise ValueError(f"dtype: float32 or float16, not {dtype!r}")
            if dtype == "float16":  # weights and activations in half precision, for GPUs
                model = model.half()
        kwargs.setdefault("no_attention", f"{no_attention}: it cannot give alignments")
        cap = bundle.model_config.position_limit
        if bundle.language_tokens:
            targets = sorted({d.target for d in bundle.directions})
            kwargs.setdefault("language_ids", {t: bundle.language_token_id(t) for t in targets})
        return cls(
            model,
            bundle.src_tokenizer,
            bundle.tgt_tokenizer,
            bundle.search,
            device,
            max_len_cap=cap,
            shortlist=table,
            **kwargs,
        )

    @property
    def attends(self) -> bool:
        """Whether it can give attention and alignments (`translate(..., alignments=True)`): its
        model, or the aligner it would make for them."""
        return self.model.attends or self.make_aligner is not None

    def aligner(self) -> Translator:
        """The translator that gives this one's alignments: itself where its model attends, else
        the one `make_aligner` makes (once)."""
        if self.model.attends or self.make_aligner is None:
            return self
        with self._aligner_lock:  # two decode slots may ask at once
            if self._aligner is None:
                self._aligner = self.make_aligner()
            return self._aligner

    @property
    def max_source_tokens(self) -> int | None:
        """The most tokens a source sentence may have (EOS excluded); None: the model sets no limit."""
        return None if self.max_len_cap is None else self.max_len_cap - 1

    def encode(self, texts: list[str], target: str | None = None) -> list[list[int]]:
        """Source token ids of each text (NFC, trimmed), as `translate_ids` takes them; on a
        multilingual model each non-empty text's start with `target`'s language token (`target`
        may be left out where the model has one target language; a bilingual one ignores it)."""
        ids = self.src_tokenizer.encode([unicodedata.normalize("NFC", text.strip()) for text in texts])
        if not self.language_ids:
            return ids
        if target is None and len(self.language_ids) == 1:  # one target language: no choice to make
            [target] = self.language_ids
        if target not in self.language_ids:
            known = ", ".join(sorted(self.language_ids))
            asked = "no target language" if target is None else f"target language {target!r}"
            raise NmtError(f"{asked}: the model translates into {known}")
        token = self.language_ids[target]
        return [[token, *seq] if seq else seq for seq in ids]

    def translate(
        self,
        texts: list[str],
        search: SearchConfig | None = None,
        alignments: bool = False,
        target: str | None = None,
    ) -> list[list[Translation]]:
        """An n-best list for each text, in input order. Empty texts translate to ''.
        `alignments`: each translation also carries its attention and word alignment; raises
        NoAttention when the model (or its backend) has no attention. `target`: as `encode`."""
        return self.translate_ids(self.encode(texts, target), search, alignments)

    def translate_ids(
        self, ids: list[list[int]], search: SearchConfig | None = None, alignments: bool = False
    ) -> list[list[Translation]]:
        """As `translate`, for texts already encoded by `encode` (a sentence over the model's limit
        is cut to it, with a warning: callers that must not cut check `max_source_tokens` first)."""
        search = search or self.search
        if alignments and not self.attends:
            raise NoAttention(self.no_attention)
        if alignments and not self.model.attends:  # its aligner decodes them (its own search)
            return self.aligner().translate_ids(ids, search, alignments)
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
        empty = Translation("", 0.0, 0.0)
        if alignments:
            empty = Translation("", 0.0, 0.0, Attention([], [], torch.zeros(0, 1)), [])  # nothing decoded
        results: list[list[Translation]] = [[empty] for _ in ids]
        todo = [i for i, seq in enumerate(ids) if seq]
        lengths = [len(ids[i]) + 1 for i in todo]
        batches = [
            [todo[i] for i in batch]
            for batch in length_sorted_batches(lengths, self.batch_size, self.batch_tokens)
        ]

        def decode(rows: list[int]) -> list[list[Hypothesis]]:
            return self._search([ids[i] for i in rows], search, alignments)

        if self.workers > 1 and len(batches) > 1:
            with ThreadPoolExecutor(min(self.workers, len(batches)), "nmt-decode") as pool:
                decoded = list(pool.map(decode, batches))
        else:
            decoded = [decode(rows) for rows in batches]
        for rows, nbest in zip(batches, decoded, strict=True):
            for row, hypotheses in zip(rows, nbest, strict=True):
                texts_out = self.tgt_tokenizer.decode([h.tokens for h in hypotheses])
                found = [
                    self._translation(text, h, ids[row] if alignments else None)
                    for text, h in zip(texts_out, hypotheses, strict=True)
                ]
                results[row] = found or [replace(empty, score=float("-inf"), log_prob=float("-inf"))]
        return results

    def _search(
        self, batch: list[list[int]], search: SearchConfig, alignments: bool
    ) -> list[list[Hypothesis]]:
        """The n-best lists of one batch of encoded sentences."""
        src, src_lengths = collate_source(batch)
        src, src_lengths = src.to(self.device), src_lengths.to(self.device)
        if isinstance(self.model, SearchEngine):  # a search of its own (CTranslate2)
            return self.model.beam_search(src, src_lengths, search, self.max_len_cap)
        vocabulary = None if self.shortlist is None else self.shortlist.vocabulary(src)
        outside = 0 if self.shortlist is None else self.shortlist.outside
        return beam_search(
            self.model, src, src_lengths, search, self.max_len_cap, alignments, vocabulary, outside
        )

    def _translation(self, text: str, hypothesis: Hypothesis, src_ids: list[int] | None) -> Translation:
        """The translation a hypothesis gives; with the source's ids, its attention and alignment."""
        if src_ids is None or hypothesis.attention is None:
            return Translation(text, hypothesis.score, hypothesis.log_prob)
        weights = hypothesis.attention[:, : len(src_ids) + 1].cpu()  # (T + 1, S + 1): padding cut
        if self.language_ids and src_ids and src_ids[0] in self.language_ids.values():
            src_ids, weights = src_ids[1:], weights[:, 1:]  # the language token is no source word
        src_pieces = self.src_tokenizer.pieces(src_ids)
        tgt_pieces = self.tgt_tokenizer.pieces(hypothesis.tokens)
        return Translation(
            text,
            hypothesis.score,
            hypothesis.log_prob,
            Attention(src_pieces, tgt_pieces, weights),
            word_alignment(src_pieces, tgt_pieces, weights),
        )

    def translate_best(
        self, texts: list[str], search: SearchConfig | None = None, target: str | None = None
    ) -> list[str]:
        """The best translation of each text, in input order (`target`: as `encode`)."""
        return [nbest[0].text for nbest in self.translate(texts, search, target=target)]
