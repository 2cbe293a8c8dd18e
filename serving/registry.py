"""The models a service runs: every bundle under the models folder, its translator and batcher,
and the routing of a request to one of them (explicit model, A/B split, or the pair's default).

A bundle serves every direction it declares (a multilingual one several): it is loaded once, one
translator and one batcher, and a `ModelEntry` per direction shares them (`ModelEntry.toward`).
A batch may then mix directions: each sentence's ids start with its own target's token. A
pair's default is the bundle with the highest BLEU recorded on `DEFAULT_TEST_SET` for that
direction (`nmt evaluate --record`), else one of the kind its config prefers, else the first by name.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nmt.bundle import BUNDLE_FILE, Bundle, bundle_name, load_bundle
from nmt.config import SearchConfig
from nmt.engines import Choice, available, check_engine, choose, open_translator, speed_record
from nmt.errors import BundleError, NmtError
from nmt.languages import Direction
from nmt.shortlist import require_shortlist, shortlist_path
from nmt.translator import Translation, Translator
from serving.batcher import MicroBatcher
from serving.settings import Settings

log = logging.getLogger("nmt.serving.registry")

DEFAULT_TEST_SET = "test_2016_flickr"  # the recorded scores that pick a pair's default


class RoutingError(NmtError):
    """A request names a model or language pair the service does not have."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ModelEntry:
    """A loaded bundle, as asked for one of its directions (its translator and batcher are the
    bundle's, shared by the entries of all its directions)."""

    bundle: Bundle
    translator: Translator
    batcher: MicroBatcher
    choice: Choice  # the engine that serves it, and why
    direction: Direction

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def cache_version(self) -> str:
        """What the cache keys a translation by: the version, marked where a vocabulary shortlist
        decodes it, with the shortlist file's digest (its translations may differ from the full
        vocabulary's and another shortlist's, so replicas with and without one, or with another
        one, must not share entries)."""
        shortlist = self.translator.shortlist
        return self.version if shortlist is None else f"{self.version}+shortlist-{shortlist.digest[:16]}"

    @property
    def backend(self) -> str:
        return self.choice.engine

    @property
    def pair(self) -> str:
        return str(self.direction)

    def toward(self, direction: Direction) -> ModelEntry:
        """This model asked for another of its directions."""
        return replace(self, direction=direction)

    def bleu(self, test_set: str = DEFAULT_TEST_SET) -> float | None:
        """The BLEU recorded for this direction on `test_set`, if any."""
        bleu = (self.bundle.scores(self.direction).get(test_set) or {}).get("bleu")
        return float(bleu) if isinstance(bleu, int | float) else None

    def describe(self) -> dict[str, Any]:
        meta = self.bundle.meta
        one = None if self.bundle.multilingual else self.bundle.directions[0]
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.bundle.model_config.architecture,
            "source": one and one.source,  # null for a model of several directions
            "target": one and one.target,
            "directions": [[d.source, d.target] for d in self.bundle.directions],
            "language_tokens": self.bundle.language_tokens,
            "parameters": meta.get("parameters"),
            "backend": self.backend,
            "backend_reason": self.choice.reason,
            "speed": self.choice.record,  # sentences/s per engine measured on this device, or null
            "alignment_backend": self.translator.aligner_engine,  # where alignments decode, if elsewhere
            "device": str(self.translator.device),
            "search": self.bundle.search.model_dump(),
            "alignment": self.translator.attends,  # whether return_alignment is available
            "shortlist": self.translator.shortlist is not None,  # decodes over a vocabulary shortlist
            "scores": meta.get("scores"),
        }


def bundle_folders(models_dir: Path) -> list[Path]:
    """The bundle folders directly under `models_dir` (a bundle folder itself counts as one)."""
    if (models_dir / BUNDLE_FILE).is_file():
        return [models_dir]
    if not models_dir.is_dir():
        raise NmtError(f"{models_dir}: models folder not found (set NMT_MODELS_DIR or --models)")
    folders = sorted(p for p in models_dir.iterdir() if (p / BUNDLE_FILE).is_file())
    if not folders:
        raise NmtError(f"{models_dir}: no model bundles in it (folders with {BUNDLE_FILE})")
    named: dict[str, Path] = {}
    for folder in folders:
        name = bundle_name(folder)
        if name in named:
            raise NmtError(
                f"{named[name]} and {folder} are both named {name!r}: requests name models by it, so "
                f'rename one (the "name" in its {BUNDLE_FILE}; or train with --set name=NAME)'
            )
        named[name] = folder
    return folders


def check_engines(settings: Settings) -> None:
    """NmtError, one line naming the bundle, where NMT_BACKEND cannot run one of the bundles
    (an explicit engine that cannot run it, or `auto` with none that can): `nmt serve` checks
    this before it starts the server, so the mistake is not a start-up traceback."""
    for folder in bundle_folders(settings.models_dir):
        bundle = load_bundle(folder, verify=False)  # the workers verify it as they load it
        try:
            if settings.backend != "auto":
                check_engine(bundle, settings.backend, settings.device)
            elif not available(bundle, settings.device):
                choose(bundle, settings.device)  # raises, naming every engine's reason
        except BundleError as error:
            raise NmtError(f"NMT_BACKEND={settings.backend}: {error}") from None


def _choice(bundle: Bundle, settings: Settings) -> Choice:
    """The engine that serves the bundle: NMT_BACKEND, or with `auto` the fastest recorded for
    this device (`nmt.engines.choose`). NmtError, one line naming the bundle, when the engine
    cannot run it."""
    threads = settings.decode_threads
    try:
        if settings.backend == "auto":
            return choose(bundle, settings.device, threads)
        check_engine(bundle, settings.backend, settings.device)
    except BundleError as error:
        raise NmtError(f"NMT_BACKEND={settings.backend}: {error}") from None
    return Choice(
        settings.backend, f"NMT_BACKEND={settings.backend}", speed_record(bundle, settings.device, threads)
    )


def _translator(bundle: Bundle, settings: Settings, choice: Choice | None = None) -> Translator:
    """The bundle's translator on the chosen engine; an export that is missing, from another
    bundle version or without the attention its model has (made before alignments) is (re)made
    first, so a retrained bundle dropped in models/ just works (`nmt.engines.open_translator`)."""
    choice = choice or _choice(bundle, settings)
    shortlist = settings.shortlist and shortlist_path(bundle).is_file()
    # one of another version or vocabulary is refused before any export
    if shortlist and require_shortlist(bundle).tables > 1 and choice.engine == "ctranslate2":
        log.warning(  # an optimisation it cannot have there: served as without one, /v1/models says so
            "%s: decodes without its shortlist on ctranslate2 (a table per target language is more "
            "than a vmap can hold)",
            bundle.name,
        )
        shortlist = False
    return open_translator(
        bundle,
        choice.engine,
        settings.device,
        threads=settings.decode_threads,
        replicas=settings.slots,
        batch_size=settings.batch_max_sentences,
        batch_tokens=1 << 30,
        shortlist=shortlist,
    )


def _decode_fn(translator: Translator, settings: Settings, engine: str):
    """The batcher's decode call; on CUDA the PyTorch model runs under fp16 autocast."""
    autocast = settings.device == "cuda" and engine == "torch"

    def decode(ids: list[list[int]], search: SearchConfig, alignments: bool) -> list[list[Translation]]:
        context = torch.autocast("cuda", dtype=torch.float16) if autocast else nullcontext()
        with torch.inference_mode(), context:
            return translator.translate_ids(ids, search, alignments)

    return decode


class Registry:
    def __init__(self, entries: list[ModelEntry], ab_split: dict[str, dict[str, float]]) -> None:
        """`entries`: one per model (any of its directions); the registry routes all of them."""
        self.entries = {entry.name: entry for entry in entries}
        self.by_version = {entry.version: entry for entry in entries}
        self.pairs: dict[str, list[ModelEntry]] = {}
        for entry in entries:
            for direction in entry.bundle.directions:
                self.pairs.setdefault(str(direction), []).append(entry.toward(direction))
        self.defaults = {pair: min(group, key=_default_rank) for pair, group in self.pairs.items()}
        for pair, weights in ab_split.items():
            if pair not in self.pairs:
                raise NmtError(f"NMT_AB_SPLIT: no model translates {pair}")
            for name in weights:
                if name not in {e.name for e in self.pairs[pair]}:
                    raise NmtError(f"NMT_AB_SPLIT: {pair} has no model named {name!r}")
        self.ab_split = {
            pair: {n: w for n, w in weights.items() if w > 0} for pair, weights in ab_split.items()
        }

    @classmethod
    def load(
        cls,
        settings: Settings,
        executor: Executor,
        batch_observer: Callable[[str], Callable[[int, float], None]] | None = None,
    ) -> Registry:
        """Every bundle under the models folder with its translator and (not yet started) batcher;
        `batch_observer(model name)` gives the batcher's callback for (sentences, seconds)."""
        entries = []
        for folder in bundle_folders(settings.models_dir):  # names checked unique there
            bundle = load_bundle(folder)
            choice = _choice(bundle, settings)
            log.info("%s: served on %s (%s)", bundle.name, choice.engine, choice.reason)
            translator = _translator(bundle, settings, choice)
            batcher = MicroBatcher(
                _decode_fn(translator, settings, choice.engine),
                executor,
                max_sentences=settings.batch_max_sentences,
                max_tokens=settings.batch_max_tokens,
                max_wait_s=settings.batch_max_wait_ms / 1000,
                max_queued=settings.queue_max_sentences,
                on_batch=batch_observer(bundle.name) if batch_observer else None,
                slots=settings.slots,
            )
            entries.append(ModelEntry(bundle, translator, batcher, choice, bundle.directions[0]))
            log.info("loaded %s (%s, %s) from %s", bundle.name, bundle.version, choice.engine, folder)
        return cls(entries, settings.ab_split)

    def languages(self) -> dict[str, list[str]]:
        """Source language -> the target languages it translates into."""
        found: dict[str, list[str]] = {}
        for entry in self.defaults.values():
            found.setdefault(entry.direction.source, []).append(entry.direction.target)
        return {src: sorted(tgts) for src, tgts in sorted(found.items())}

    def route(self, src: str, tgt: str, model: str | None, client_id: str | None) -> ModelEntry:
        """The model for this request: the one it names, else the pair's A/B split (sticky per
        client id), else the pair's default."""
        pair = f"{src}-{tgt}"
        if model is not None:
            entry = self.entries.get(model) or self.by_version.get(model)
            if entry is None:
                raise RoutingError("model", f"unknown model {model!r}; GET /v1/models lists them")
            served = next((e for e in self.pairs.get(pair, []) if e.name == entry.name), None)
            if served is None:
                directions = ", ".join(map(str, entry.bundle.directions))
                raise RoutingError("model", f"model {model!r} translates {directions}, not {pair}")
            return served
        if pair not in self.pairs:
            sources = self.languages()
            if src not in sources:
                raise RoutingError(
                    "source", f"unsupported source language {src!r}; GET /languages lists them"
                )
            raise RoutingError("target", f"no model translates {src!r} into {tgt!r}")
        weights = self.ab_split.get(pair)
        if not weights:
            return self.defaults[pair]
        chosen = weighted_choice(weights, pair, client_id)
        return next(e for e in self.pairs[pair] if e.name == chosen)


def _default_rank(entry: ModelEntry) -> tuple:
    """Sorts a pair's models, its default first: the highest recorded BLEU on DEFAULT_TEST_SET
    (models without one after those with), then one of the kind its config prefers, then by name."""
    bleu = entry.bleu()
    return (bleu is None, -(bleu or 0.0), not entry.bundle.model_config.preferred_default, entry.name)


def weighted_choice(weights: dict[str, float], pair: str, client_id: str | None) -> str:
    """A name drawn in proportion to its weight; the same client id always draws the same name."""
    if client_id:
        digest = hashlib.sha256(f"{pair}\0{client_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
    else:
        point = random.random()
    total = sum(weights.values())
    running = 0.0
    for name, weight in weights.items():
        running += weight / total
        if point < running:
            return name
    return name
