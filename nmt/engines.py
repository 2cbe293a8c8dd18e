"""Which engine runs a bundle: PyTorch, ONNX Runtime or CTranslate2, chosen by measured speed.

Engines (`ENGINES`): "torch" runs every bundle; "onnx" runs every bundle where onnxruntime
imports (its export, BUNDLE/onnx/); "ctranslate2" where the module imports and the model config
lists it in `export_formats` (Transformers; BUNDLE/ct2/). `unavailable` says why one cannot.

Speed records. `nmt bench --model B --src FILE --record` decodes a sample with each engine that can
run the bundle (`measure_speeds`: the same `Translator` path, each engine in a process of its
own, after one warm-up batch, the median of its rounds) and stores sentences/s per engine in bundle.json under "speed"
(`record_speed`), one record per device and thread count:

    {"device": "cpu: AMD EPYC", "threads": 1, "date": "2026-11-28", "version": "8258ad8b7d8ec187",
     "sample": {"src": "test_2016_flickr.en.gz", "sentences": 200, "beam_size": 5, "batch_size": 32},
     "sentences_per_s": {"torch": 10.2, "onnx": 14.1, "ctranslate2": 19.8}}

It is metadata, as "scores" and "confidence" are: the bundle's version does not hash it.

Choosing (`choose`, the service's NMT_BACKEND=auto and `--backend auto` of the CLI): the record of
this device (`device_name`) and this bundle version, at the thread count nearest the one asked
(fewer threads on a tie), names the fastest engine among those available now. Without such a
record the choice falls back to `FALLBACK_ORDER`, the first available (ONNX Runtime, else
PyTorch: what served before `auto` existed; CTranslate2 is only ever chosen on a measurement),
and a warning says how to record one. CTranslate2 runs its own beam search (another length
normalisation and stopping rule, see `nmt.backends.ctranslate2`), so its translations can differ
from those the bundle's recorded scores come from (the six-direction bundle at length penalty 2.0:
39.28 against 39.75 BLEU En->De): it is chosen only when it is at least `CT2_MARGIN` times as fast
as the fastest engine that runs our search, not on a tie within the noise of a measurement. A start-up probe was the alternative: it would slow every
start by seconds per bundle, and a sample small enough for that is too noisy on a shared CPU to
rank engines a few tens of percent apart.

`open_translator(bundle, engine)` makes the translator, writing the bundle's export first when it
is missing or from another version (as the service always did for ONNX). CTranslate2 gives no
attention: a translator on it gets a second one on ONNX Runtime (else PyTorch), made on the first
request that needs alignments (`Translator(aligner=...)`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import torch

from nmt.bundle import Bundle, load_bundle, record_meta
from nmt.config import SearchConfig
from nmt.errors import BundleError, NmtError
from nmt.translator import Translator

log = logging.getLogger("nmt.engines")

ENGINES = ("torch", "onnx", "ctranslate2")
FALLBACK_ORDER = ("onnx", "torch")  # without a speed record for this device: what served before `auto`
ATTENDING = ("onnx", "torch")  # engines that give attention, for a CTranslate2 translator's alignments
SPEED_KEY = "speed"  # in bundle.json
CT2_MARGIN = 1.05  # how much faster CTranslate2 (its own search) must be than ours to be chosen


def device_name(device: str | torch.device = "cpu") -> str:
    """The processor a speed record is for: "cpu: <model name>" (Linux's /proc/cpuinfo) or
    "cuda: <GPU name>"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device) if torch.cuda.is_available() else 'unknown'}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return f"cpu: {platform.processor() or platform.machine() or 'unknown'}"


def unavailable(bundle: Bundle, engine: str, device: str | torch.device = "cpu") -> str | None:
    """Why `engine` cannot run `bundle` on `device` here (one clause); None when it can."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if engine == "torch":
        return "no CUDA device" if cuda and not torch.cuda.is_available() else None
    if engine == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        if "onnx" not in bundle.model_config.export_formats:
            return f"{bundle.model_config.architecture} models do not export to ONNX"
        if cuda and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
        return None
    if engine == "ctranslate2":
        try:
            import ctranslate2
        except ImportError:
            return "ctranslate2 is not installed"
        if "ctranslate2" not in bundle.model_config.export_formats:
            return f"CTranslate2 runs Transformers only, and this is {bundle.model_config.architecture!r}"
        if cuda and ctranslate2.get_cuda_device_count() == 0:
            return "CTranslate2 finds no CUDA device"
        return None
    return f"unknown engine {engine!r} (known: {', '.join(ENGINES)})"


def available(bundle: Bundle, device: str | torch.device = "cpu") -> list[str]:
    """The engines that can run `bundle` on `device` here, in `ENGINES` order."""
    return [engine for engine in ENGINES if unavailable(bundle, engine, device) is None]


def check_engine(bundle: Bundle, engine: str, device: str | torch.device = "cpu") -> None:
    """BundleError, one line naming the bundle, unless `engine` can run it here."""
    reason = unavailable(bundle, engine, device)
    if reason is not None:
        raise BundleError(f"{bundle.name} ({bundle.path}): the {engine} engine cannot run it: {reason}")


@dataclass(frozen=True)
class Choice:
    """The engine that runs a bundle, why (for logs and /v1/models), and the record it read."""

    engine: str
    reason: str
    record: dict[str, Any] | None = None


def speed_records(bundle: Bundle) -> list[dict[str, Any]]:
    """The bundle's speed records (well-formed ones: others are skipped)."""
    records = bundle.meta.get(SPEED_KEY)
    if not isinstance(records, list):
        return []
    return [
        r
        for r in records
        if isinstance(r, dict)
        and isinstance(r.get("sentences_per_s"), dict)
        and isinstance(r.get("threads"), int)
        and all(isinstance(v, int | float) for v in r["sentences_per_s"].values())
    ]


def speed_record(
    bundle: Bundle, device: str | torch.device = "cpu", threads: int = 1
) -> dict[str, Any] | None:
    """The record for this device and bundle version at the thread count nearest `threads`
    (fewer on a tie); None when there is none."""
    here = device_name(device)
    fits = [
        r for r in speed_records(bundle) if r.get("device") == here and r.get("version") == bundle.version
    ]
    if not fits:
        return None
    return min(fits, key=lambda r: (abs(r["threads"] - threads), r["threads"]))


def choose(bundle: Bundle, device: str | torch.device = "cpu", threads: int = 1) -> Choice:
    """The engine `auto` runs `bundle` on (see the module's docstring). BundleError naming the
    bundle when no engine can run it here."""
    engines = available(bundle, device)
    if not engines:
        reasons = "; ".join(f"{e}: {unavailable(bundle, e, device)}" for e in ENGINES)
        raise BundleError(f"{bundle.name} ({bundle.path}): no engine can run it on {device} ({reasons})")
    record = speed_record(bundle, device, threads)
    if record is not None:
        speeds = record["sentences_per_s"]
        measured = [e for e in engines if e in speeds]
        if measured:
            fastest = max(measured, key=lambda e: speeds[e])
            others = ", ".join(f"{e} {speeds[e]:.1f}" for e in sorted(speeds, key=lambda e: -speeds[e]))
            missing = [e for e in speeds if e not in engines]
            unmet = f"; not available here: {', '.join(missing)}" if missing else ""
            reason = (
                f"fastest in the speed record of {record.get('date')} ({record['threads']} threads, "
                f"sentences/s: {others}{unmet})"
            )
            ours = [e for e in measured if e != "ctranslate2"]
            if fastest == "ctranslate2" and ours:
                best = max(ours, key=lambda e: speeds[e])
                if speeds[fastest] < CT2_MARGIN * speeds[best]:
                    reason = (
                        f"{reason}; ctranslate2 is less than {CT2_MARGIN}x as fast, and runs its own "
                        f"search: {best}, which runs ours"
                    )
                    fastest = best
            return Choice(fastest, reason, record)
    engine = next(e for e in (*FALLBACK_ORDER, *engines) if e in engines)
    stale = [
        r
        for r in speed_records(bundle)
        if r.get("device") == device_name(device) and r.get("version") != bundle.version
    ]
    why = "a record from another bundle version" if stale else "no speed record"
    log.warning(
        "%s: %s for this device (%s); serving on %s, the fallback. Record one with: "
        "nmt bench --model %s --src FILE --record",
        bundle.name,
        why,
        device_name(device),
        engine,
        bundle.path,
    )
    return Choice(engine, f"{why} for {device_name(device)}: the fallback ({' > '.join(FALLBACK_ORDER)})")


def _export_hint(bundle: Bundle, engine: str) -> str:
    return f"nmt export --model {bundle.path} --format {engine}"


def export(bundle: Bundle, engine: str) -> None:
    """Write the bundle's export for `engine` ("onnx" or "ctranslate2"); NmtError, one line,
    where it cannot be written (a read-only models folder)."""
    log.warning("%s: exporting it for %s now", bundle.path, engine)
    try:
        if engine == "onnx":
            from nmt.export.onnx import export_onnx

            export_onnx(bundle)
        else:
            from nmt.export.ctranslate2 import export_ctranslate2

            export_ctranslate2(bundle)
    except OSError as error:
        raise NmtError(
            f"{bundle.path}: no usable {engine} export and none can be written ({error.strerror}); "
            f"run `{_export_hint(bundle, engine)}` or choose another engine"
        ) from None


def open_translator(
    bundle: Bundle,
    engine: str,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    replicas: int = 1,
    **kwargs: Any,
) -> Translator:
    """A translator on `engine`, its export (re)made first when missing, of another bundle
    version, or without the attention its model has (an ONNX export from before alignments).
    `threads`: intra-op threads (default PyTorch's); `replicas`: calls it may serve at once
    (CTranslate2 runs that many workers; the others need none); other keywords to `Translator`.
    On CTranslate2, requests for alignments go to a second translator on an attending engine,
    made when first needed."""
    check_engine(bundle, engine, device)
    options: dict[str, Any] = {}
    if engine == "onnx":
        options = {"threads": threads}
    elif engine == "ctranslate2":
        options = {"threads": threads, "replicas": replicas}
    if engine == "torch":
        return Translator.from_bundle(bundle, device, "torch", **kwargs)

    def usable() -> Translator | None:
        """A translator on the export there is, None where it must be (re)made."""
        try:
            translator = Translator.from_bundle(bundle, device, engine, engine=options, **kwargs)
            if engine != "onnx" or translator.attends or not bundle.model_config.attends:
                return translator
            log.warning("%s: its ONNX export has no attention output", bundle.path)
        except BundleError as error:
            log.warning("%s", error)
        return None

    translator = usable()
    if translator is None:
        # one process at a time makes it (replicas starting together on one models folder);
        # the others then find it made
        with _export_lock(bundle, engine):
            translator = usable()
            if translator is None:
                export(bundle, engine)
                translator = Translator.from_bundle(bundle, device, engine, engine=options, **kwargs)
    return _with_aligner(translator, bundle, device, threads, kwargs)


@contextlib.contextmanager
def _export_lock(bundle: Bundle, engine: str) -> Iterator[None]:
    """Hold BUNDLE/.export-ENGINE.lock (a file lock, `filelock`: held across processes, released
    by the OS when the holder dies); where it cannot be created (a read-only folder), go on
    without it: no export can be written there either, which `export` says in one line."""
    lock = filelock.FileLock(bundle.path / f".export-{engine}.lock")
    try:
        lock.acquire()
        held = True
    except OSError:
        held = False
    try:
        yield
    finally:
        if held:
            lock.release()


def _with_aligner(
    translator: Translator, bundle: Bundle, device: str | torch.device, threads: int | None, kwargs: dict
) -> Translator:
    """The translator, with an attending one to make for alignments where it has no attention
    and its model has (CTranslate2)."""
    if translator.attends or not bundle.model_config.attends:
        return translator
    engine = next((e for e in ATTENDING if unavailable(bundle, e, device) is None), None)
    if engine is None:
        return translator
    if engine == "onnx" and not _onnx_export_current(bundle):
        export(bundle, engine)  # written now, not on the first request that needs it

    def make() -> Translator:
        log.info("%s: alignments asked for; loading it on %s for them", bundle.name, engine)
        return open_translator(bundle, engine, device, threads, **kwargs)

    translator.aligner_engine = engine
    translator.make_aligner = make
    return translator


def _onnx_export_current(bundle: Bundle) -> bool:
    """Whether BUNDLE/onnx/ is an export of this format and bundle version (its sessions are
    not made: the aligner makes them when first needed)."""
    from nmt.backends.onnx import read_export
    from nmt.onnx_format import EXPORT_DIR, EXPORT_FILE

    folder = bundle.path / EXPORT_DIR
    if not (folder / EXPORT_FILE).is_file():
        return False
    try:
        return read_export(folder).get("version") == bundle.version
    except BundleError:
        return False


def measure_speeds(
    bundle: Bundle,
    texts: list[str],
    engines: list[str],
    device: str | torch.device = "cpu",
    threads: int = 1,
    beam_size: int = 5,
    batch_size: int = 32,
    rounds: int = 3,
    target: str | None = None,
) -> dict[str, float]:
    """Sentences/s of each engine translating `texts` (into `target` where the bundle has several
    target languages; beam `beam_size`, `batch_size` sentences a batch, the bundle's other search
    options): each engine in a process of its own (as the
    service runs it: one engine's thread pools do not slow another's, which on a small CPU they
    do: PyTorch's kept CTranslate2 at 2 threads to half its speed, measured), loaded and warmed
    up on one batch, then `rounds` rounds; the median round."""
    context = multiprocessing.get_context("spawn")
    speeds = {}
    for engine in engines:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            seconds = pool.submit(
                _measure_engine,
                str(bundle.path),
                engine,
                texts,
                str(device),
                threads,
                beam_size,
                batch_size,
                rounds,
                target,
            ).result()
        speeds[engine] = round(len(texts) / statistics.median(seconds), 2)
    return speeds


def _measure_engine(
    path: str,
    engine: str,
    texts: list[str],
    device: str,
    threads: int,
    beam_size: int,
    batch_size: int,
    rounds: int,
    target: str | None,
) -> list[float]:
    """The seconds of each round of one engine (run in a process of its own)."""
    torch.set_num_threads(threads)
    bundle = load_bundle(path)
    search = bundle.search.with_overrides(beam_size=beam_size, n_best=1)
    translator = open_translator(bundle, engine, device, threads, batch_size=batch_size)
    _timed(translator, texts[:batch_size], search, target)  # warm-up: sessions, allocator
    return [_timed(translator, texts, search, target) for _ in range(rounds)]


def _timed(translator: Translator, texts: list[str], search: SearchConfig, target: str | None) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        translator.translate(texts, search, target=target)
    return time.perf_counter() - start


def speed_entry(
    bundle: Bundle,
    speeds: dict[str, float],
    device: str | torch.device,
    threads: int,
    sample: dict[str, Any],
) -> dict[str, Any]:
    """A speed record of `speeds` (sentences/s per engine), dated today."""
    return {
        "device": device_name(device),
        "threads": threads,
        "date": datetime.date.today().isoformat(),
        "version": bundle.version,
        "sample": sample,
        "sentences_per_s": speeds,
    }


def record_speed(bundle: Bundle, entry: dict[str, Any]) -> None:
    """Store `entry` among the bundle's speed records, replacing the one of the same device and
    threads (bundle.json, atomically; the version stays the same)."""
    kept = [
        r
        for r in speed_records(bundle)
        if (r.get("device"), r.get("threads")) != (entry["device"], entry["threads"])
    ]
    records = sorted([*kept, entry], key=lambda r: (str(r.get("device")), r["threads"]))
    record_meta(bundle.path, SPEED_KEY, records)
    bundle.meta[SPEED_KEY] = json.loads(json.dumps(records))
