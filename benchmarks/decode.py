"""Decoding speed of one bundle's identical weights in PyTorch eager, ONNX Runtime and CTranslate2.

Contenders, each in a process of its own (as the service runs one engine; measured: PyTorch's
thread pool in the same process kept CTranslate2 at half its speed at 2 threads on a 2-core box),
all with the same threads (`--threads`, default torch's), taking turns:
- Transformer bundles: PyTorch eager, ONNX Runtime fp32, ONNX Runtime int8 (dynamic
  quantization), CTranslate2 fp32, CTranslate2 int8 (compute_type at load time);
- LSTM bundles: PyTorch eager, ONNX Runtime fp32, ONNX Runtime int8.
The exports are made from the bundle into a temporary copy, so the numbers are for the code as
it is and the bundle folder is left alone. Every contender translates the first N sentences of
test_2016_flickr through `Translator` (same tokenization, length-sorted batches, detokenization)
in three settings: beam 5 at batch 1, beam 5 at batch 32, greedy at batch 32. It reports
sentences/s, target tokens/s (the translations' SentencePiece tokens), the peak resident memory
the decoding added on top of what was loaded (VmHWM reset before each run; the weights' own
footprint is the "stored MB" of the files each loads: ONNX and CTranslate2 hold them in fp32 or
int8, PyTorch in fp32 whatever the bundle stores), BLEU against the
references, and each contender's speed as a ratio to CTranslate2 fp32 (Transformers) and to
PyTorch. CTranslate2 runs its own beam search (see `nmt.backends.ctranslate2`): its speed is the
yardstick, its translations differ slightly from ours; ONNX Runtime runs ours.

Targets (beam 5, batch 32): ONNX Runtime fp32 >= 1.0x CTranslate2 fp32; ONNX Runtime >= 2x
PyTorch eager; int8 within 0.5 BLEU of fp32 and faster than it (each engine's int8 against its
fp32). With `--rounds` > 1 the contenders alternate their order and the medians are reported;
the speed targets print each round's ratio beside the medians' (the run-to-run spread).

Shortlists (`nmt.shortlist`): when the bundle has shortlist.npz, each engine's fp32 contender
also runs "+ shortlist" (PyTorch and ONNX Runtime over each batch's shortlist vocabulary,
CTranslate2 with its vmap). Targets, each engine against itself without: BLEU no more than
0.2 below the full vocabulary (a shortlist may also score higher), and, for the recurrent
models, at least 1.5x the sentences/s. `--shortlist-only` runs only those pairs, at beam 5,
batch 32.

At N > 1 threads on a CPU, ONNX Runtime fp32 and CTranslate2 fp32, with and without a shortlist,
run again as N workers of one thread each (the service's way on a CPU of 2 or more cores: one
one-thread decode slot per core), and the speed targets between them (ONNX Runtime against
CTranslate2; a shortlist against the full vocabulary) take each contender's faster way to use
the N threads; the ratio within each call is printed beside it.

Float16 (`--fp16`, on with `--device cuda`; the issue's GPU rows): PyTorch fp16 (the model in
half precision), ONNX Runtime fp16 (an export with `--quantize float16`) and CTranslate2 fp16
(compute_type float16, where this ctranslate2 build computes in float16 on the device: GPUs
only), and the setting beam 5, batch 64. Targets there: ONNX Runtime fp16 >= 1.0x CTranslate2
fp16 (where that ran), and each engine's fp16 within 0.5 BLEU of its fp32 (its speed against
fp32 printed beside). On a CPU the fp16 contenders run too, slower than fp32: a check of the
path, not a speed-up.

A distilled student (`--student B`, see `nmt distill`) decodes greedily against its teacher at
beam 5, each on the engine NMT_BACKEND=auto picks for it: >= 3x the teacher's sentences/s and no
more than 1.0 BLEU below it. `--model` may be repeated and `--thread-counts 1,2` runs everything
at each thread count, so one run judges every target of the decoding issue:

    .venv/bin/python benchmarks/decode.py --thread-counts 1,2 --shortlist-only \
        --model models/transformer-en-de --model models/lstm-attention-en-de --model models/lstm-en-de \
        --student models/transformer-en-de-student
    .venv/bin/python benchmarks/decode.py --threads 1                        # models/transformer-en-de, 1000 sentences
    .venv/bin/python benchmarks/decode.py --threads 1 --model runs/lstm-en-de/bundle --sentences 200
    .venv/bin/python benchmarks/decode.py --thread-counts 1,2 --shortlist-only \
        --model models/transformer-en-de-fr --source en --target de          # a multilingual bundle: one direction
    python3 benchmarks/decode.py --device cuda --model models/transformer-en-de  # fp32 and fp16 on a GPU
    .venv/bin/python benchmarks/decode.py --quick                            # 64 sentences
    .venv/bin/python benchmarks/decode.py --threads 2 --model models/lstm-en-de --shortlist-only
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import harness
import torch

from nmt.bundle import Bundle, load_bundle
from nmt.compare import System, significance
from nmt.config import SearchConfig
from nmt.data import read_lines
from nmt.export.ctranslate2 import export_ctranslate2
from nmt.export.onnx import export_onnx
from nmt.metrics import bleu_only
from nmt.onnx_format import DECODER_FILE, ENCODER_FILE
from nmt.shortlist import FILE as SHORTLIST_FILE
from nmt.shortlist import require_shortlist
from nmt.translator import Translator

DEFAULT_MODEL = "models/transformer-en-de"
SETTINGS = {  # name: (beam size, batch size)
    "beam 5, batch 1": (5, 1),
    "beam 5, batch 32": (5, 32),
    "greedy, batch 32": (1, 32),
}
MAIN = "beam 5, batch 32"  # the setting the targets are judged on
FP16 = "beam 5, batch 64"  # the setting the float16 targets are judged on (a GPU's batch)
CT2_RATIO, TORCH_RATIO, INT8_BLEU = 1.0, 2.0, 0.5  # issue 15: ONNX Runtime fp32 at CTranslate2 fp32's speed
SHORTLIST_BLEU, SHORTLIST_SPEED = 0.2, 1.5  # at most this far below; at least this fast (recurrent)
SHORTLISTED = " + shortlist"
BOOTSTRAP = 1000  # paired bootstrap resamples for a shortlist's BLEU difference
STUDENT_SPEED, STUDENT_BLEU = 3.0, 1.0  # a distilled student against its teacher


def _status_kb(field_name: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    """Make VmHWM (the peak resident set) restart from the current RSS (Linux)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@dataclass(frozen=True)
class Engine:
    """How a contender's translator is made: `Translator.from_bundle`'s arguments."""

    path: str
    device: str
    backend: str  # torch, onnx, ctranslate2, auto
    options: dict | None = None  # the backend's engine options
    shortlist: bool = False
    workers: int = 1  # batches decoded at once (`Translator.workers`)


_TRANSLATOR: Translator | None = None  # a contender process's own


def _load(engine: Engine, threads: int) -> None:
    """A contender process's initializer: its threads, then its translator."""
    global _TRANSLATOR
    torch.set_num_threads(threads)
    bundle = load_bundle(engine.path)
    _TRANSLATOR = Translator.from_bundle(
        bundle,
        engine.device,
        engine.backend,
        engine.options,
        shortlist=engine.shortlist,
        workers=engine.workers,
    )


def _decode(
    texts: list[str], search: SearchConfig | None, batch: int, target: str | None
) -> tuple[float, float, list[str], str]:
    """In a contender's process: (seconds, resident MB the run added at its peak, translations,
    the engine's class name). `target`: the language a multilingual bundle translates into."""
    assert _TRANSLATOR is not None
    _TRANSLATOR.batch_size = batch
    _reset_peak()
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    outputs = _TRANSLATOR.translate_best(texts, search, target)
    seconds = time.perf_counter() - start
    return seconds, (_status_kb("VmHWM") - before) / 1024, outputs, type(_TRANSLATOR.model).__name__


@dataclass
class Contender:
    name: str
    engine: Engine
    stored_mb: float  # the files it loads: weights or exports
    seconds: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)  # resident memory the run added, at its peak
    outputs: dict[str, list[str]] = field(default_factory=dict)
    kind: str = ""  # the engine class that decoded (known after the first run)
    pool: ProcessPoolExecutor | None = None

    def start(self, threads: int) -> None:
        """Its process, with its translator loaded."""
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            1, mp_context=context, initializer=_load, initargs=(self.engine, threads)
        )

    def run(
        self,
        setting: str,
        texts: list[str],
        search: SearchConfig | None,
        batch: int,
        target: str | None = None,
    ) -> None:
        assert self.pool is not None, "start() it first"
        seconds, peak, outputs, self.kind = self.pool.submit(_decode, texts, search, batch, target).result()
        self.seconds.setdefault(setting, []).append(seconds)
        self.peak_mb[setting] = max(self.peak_mb.get(setting, 0.0), peak)
        self.outputs[setting] = outputs

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


@contextlib.contextmanager
def running(contenders: list[Contender], threads: int, texts: list[str], target: str | None = None):
    """Every contender's process started and warmed up (first-call allocations, lazy
    initialisation), and shut down after."""
    try:
        for contender in contenders:
            contender.start(threads)
        for contender in contenders:
            contender.run("warm-up", texts[:8], None, 8, target)
        yield contenders
    finally:
        for contender in contenders:
            contender.close()


def _mb(*files: Path) -> float:
    return sum(path.stat().st_size for path in files) / 2**20


_CT2_PROBE = """
import sys, ctranslate2
folder, index = sys.argv[1], int(sys.argv[2])
translator = ctranslate2.Translator(folder, device="cuda", device_index=index, compute_type="float16")
print(translator.translate_batch([["\u2581a"]], max_decoding_length=2)[0].hypotheses[0])
"""


def _ctranslate2_runs_on(device: str, folder: Path) -> bool:
    """Whether this ctranslate2 build translates with the export `folder` on the device. PyPI's
    wheels are built for one CUDA major version and load its libraries when first used: on a
    machine with another they see no GPU, or fail (or crash) at the first product, so on a GPU a
    process of its own tries one step first. On a CPU, yes."""
    if device == "cpu":
        return True
    import subprocess
    import sys

    try:
        probe = subprocess.run(
            [sys.executable, "-c", _CT2_PROBE, str(folder), str(torch.device(device).index or 0)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        print("CTranslate2 did not load on the GPU in 300 s", flush=True)
        return False
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        print(f"CTranslate2 cannot run on {device} here ({last})", flush=True)
    return probe.returncode == 0


def _float16_contenders(
    path: Path, fp32: Bundle, tmp: Path, device: str, ctranslate2: bool
) -> list[Contender]:
    """PyTorch fp16 (the model in half precision), ONNX Runtime fp16 (an export with --quantize
    float16) and CTranslate2 fp16 (compute_type float16) where CTranslate2 computes in float16 on
    the device (on a GPU; not on a CPU, where the other two run, slower than in fp32: a check
    of the path, not a speed-up)."""
    import ctranslate2 as ct2

    fp16 = load_bundle(shutil.copytree(path, tmp / "fp16", ignore=shutil.ignore_patterns("onnx", "ct2")))
    export_onnx(fp16, quantize="float16")
    onnx_files = (fp16.path / "onnx" / name for name in (ENCODER_FILE, DECODER_FILE))
    found = [
        Contender(
            "PyTorch fp16",
            Engine(str(fp32.path), device, "torch", {"dtype": "float16"}),
            _mb(fp32.path / "weights.safetensors"),
        ),
        Contender("ONNX Runtime fp16", Engine(str(fp16.path), device, "onnx"), _mb(*onnx_files)),
    ]
    kind = device.split(":")[0]
    if ctranslate2 and "float16" in ct2.get_supported_compute_types(kind):
        engine = Engine(str(fp32.path), device, "ctranslate2", {"compute_type": "float16"})
        found.append(Contender("CTranslate2 fp16", engine, _mb(fp32.path / "ct2" / "model.bin")))
    elif ctranslate2:
        print(f"CTranslate2 computes no float16 on {kind}: no CTranslate2 fp16 contender", flush=True)
    return found


def _contenders(
    path: Path,
    tmp: Path,
    device: str,
    shortlist_only: bool = False,
    threads: int = 1,
    float16: bool = False,
) -> tuple[list[Contender], bool]:
    """The contenders for the bundle at `path` (exported into copies under `tmp`); whether
    CTranslate2 runs too (Transformers, where this ctranslate2 build sees the device: the
    CTranslate2 wheels on PyPI are built for one CUDA version). On a GPU: no int8 (dynamic
    quantization is a CPU technique). With a shortlist in the bundle, each fp32 contender again
    with it (`_shortlist_contenders`); `shortlist_only`: no int8. With several `threads` on the
    CPU, ONNX Runtime fp32 and CTranslate2 fp32 again as that many workers of one thread each
    (`_worker_contenders`). `float16`: the fp16 contenders too (`_float16_contenders`)."""
    fp32 = load_bundle(shutil.copytree(path, tmp / "fp32", ignore=shutil.ignore_patterns("onnx", "ct2")))
    on_cpu = device == "cpu"
    ctranslate2 = "ctranslate2" in fp32.model_config.export_formats
    if ctranslate2:
        export_ctranslate2(fp32)
        ctranslate2 = _ctranslate2_runs_on(device, fp32.path / "ct2")
        if not ctranslate2:
            print("no CTranslate2 contenders", flush=True)
    onnx_files = (ENCODER_FILE, DECODER_FILE)
    print(
        f"exporting {path} to ONNX{' (fp32, int8)' if on_cpu and not shortlist_only else ''}{' and CTranslate2' if ctranslate2 else ''} ...",
        flush=True,
    )
    export_onnx(fp32)
    contenders = [
        Contender(
            "PyTorch eager", Engine(str(fp32.path), device, "torch"), _mb(fp32.path / "weights.safetensors")
        ),
        Contender(
            "ONNX Runtime fp32",
            Engine(str(fp32.path), device, "onnx"),
            _mb(*(fp32.path / "onnx" / name for name in onnx_files)),
        ),
    ]
    if on_cpu and not shortlist_only:
        int8 = load_bundle(shutil.copytree(path, tmp / "int8", ignore=shutil.ignore_patterns("onnx", "ct2")))
        export_onnx(int8, quantize="int8")
        contenders.append(
            Contender(
                "ONNX Runtime int8",
                Engine(str(int8.path), "cpu", "onnx"),
                _mb(*(int8.path / "onnx" / name for name in onnx_files)),
            )
        )
    if ctranslate2:
        for label, compute_type in (("fp32", "float32"), ("int8", "int8"))[
            : 1 if shortlist_only or not on_cpu else 2
        ]:
            engine = Engine(str(fp32.path), device, "ctranslate2", {"compute_type": compute_type})
            contenders.append(Contender(f"CTranslate2 {label}", engine, _mb(fp32.path / "ct2" / "model.bin")))
    if float16:
        contenders += _float16_contenders(path, fp32, tmp, device, ctranslate2)
    shortlisted = _shortlist_contenders(fp32, contenders, device)
    workers = _worker_contenders(contenders + shortlisted, threads) if on_cpu else []
    return contenders + shortlisted + workers, ctranslate2


def _workers_name(name: str, threads: int) -> str:
    return f"{name}, {threads} workers x 1 thread"


def _worker_contenders(contenders: list[Contender], threads: int) -> list[Contender]:
    """ONNX Runtime fp32 and CTranslate2 fp32, with and without a shortlist, using `threads`
    cores the other way: as many batches decoded at once, one thread each (none with one
    thread), as the service decodes on a CPU of 2 or more cores (a one-thread decode slot each)."""
    if threads < 2:
        return []
    found = []
    engines = ("ONNX Runtime fp32", "CTranslate2 fp32")
    for contender in contenders:
        if contender.name in (*engines, *(engine + SHORTLISTED for engine in engines)):
            engine = replace(
                contender.engine, options={**(contender.engine.options or {}), "threads": 1}, workers=threads
            )
            found.append(Contender(_workers_name(contender.name, threads), engine, contender.stored_mb))
    return found


def _shortlist_contenders(bundle: Bundle, contenders: list[Contender], device: str) -> list[Contender]:
    """Each fp32 contender again, decoding with the bundle's shortlist (none without one)."""
    if not (bundle.path / SHORTLIST_FILE).is_file():
        print(f"{bundle.path.name}: no {SHORTLIST_FILE}, so no shortlist contenders", flush=True)
        return []
    backends = {"PyTorch eager": "torch", "ONNX Runtime fp32": "onnx", "CTranslate2 fp32": "ctranslate2"}
    if require_shortlist(bundle).tables > 1:  # a table per target language: no vmap can hold it
        print(
            f"{bundle.path.name}: a multilingual shortlist, so no CTranslate2 shortlist contender", flush=True
        )
        del backends["CTranslate2 fp32"]
    found = []
    for contender in contenders:
        if contender.name in backends:
            backend = backends[contender.name]
            options = {"compute_type": "float32"} if backend == "ctranslate2" else None
            engine = Engine(str(bundle.path), device, backend, options, shortlist=True)
            found.append(Contender(contender.name + SHORTLISTED, engine, contender.stored_mb))
    return found


def bench_bundle(model: str, args: argparse.Namespace, settings: dict[str, tuple[int, int]]) -> list[bool]:
    """Every contender of the bundle at `model` in every setting, their tables and the targets
    judged (printed); the verdicts."""
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        threads = torch.get_num_threads()
        contenders, ctranslate2 = _contenders(
            Path(model), Path(tmp), args.device, args.shortlist_only, threads, args.fp16
        )
        bundle = load_bundle(model)
        direction = bundle.direction(args.source, args.target)  # a multilingual bundle needs both
        sources = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, direction.source))
        references = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, direction.target))
        texts, references = sources[: args.sentences], references[: args.sentences]
        print(
            f"bundle {model} ({direction}); {len(texts)} sentences of {harness.TEST_SPLIT}; {threads} thread(s) for every "
            f"contender, each in its own process; device {args.device}; {args.rounds} round(s)",
            flush=True,
        )
        with running(contenders, threads, texts, direction.target):
            for round_ in range(args.rounds):
                for setting, (beam, batch) in settings.items():
                    search = bundle.search.model_copy(update={"beam_size": beam, "n_best": 1})
                    order = contenders if round_ % 2 == 0 else contenders[::-1]
                    for contender in order:
                        contender.run(setting, texts, search, batch, direction.target)
                        print(
                            f"  round {round_ + 1}, {setting}: {contender.name} "
                            f"{contender.seconds[setting][-1]:.2f} s",
                            flush=True,
                        )

    tokenizer = bundle.tgt_tokenizer
    # CTranslate2 fp32 (Transformers), else PyTorch eager
    reference = next(
        c for c in contenders if c.name == ("CTranslate2 fp32" if ctranslate2 else "PyTorch eager")
    )
    rates: dict[tuple[str, str], float] = {}
    bleus: dict[tuple[str, str], float] = {}
    for setting in settings:
        for contender in contenders:
            rates[contender.name, setting] = len(texts) / harness.median(contender.seconds[setting])
            bleus[contender.name, setting] = bleu_only(contender.outputs[setting], references)[0]
        rows = []
        for contender in contenders:
            seconds = harness.median(contender.seconds[setting])
            outputs = contender.outputs[setting]
            tokens = sum(len(ids) + 1 for ids in tokenizer.encode(outputs))  # + EOS
            same = sum(a == b for a, b in zip(outputs, contenders[0].outputs[setting], strict=True))
            rows.append(
                [
                    contender.name,
                    f"{len(texts) / seconds:.1f}",
                    f"{tokens / seconds:.0f}",
                    *(
                        [f"{rates[contender.name, setting] / rates[reference.name, setting]:.2f}x"]
                        if ctranslate2
                        else []
                    ),
                    f"{rates[contender.name, setting] / rates[contenders[0].name, setting]:.2f}x",
                    f"{contender.stored_mb:.1f}",
                    f"{contender.peak_mb[setting]:.0f}",
                    f"{bleus[contender.name, setting]:.2f}",
                    f"{same}/{len(texts)}",
                ]
            )
        print(f"\n{setting}:")
        harness.print_table(
            [
                "contender",
                "sent/s",
                "tgt tok/s",
                *([f"vs {reference.name}"] if ctranslate2 else []),
                "vs PyTorch",
                "stored MB",
                "peak MB",
                "BLEU",
                "= PyTorch",
            ],
            rows,
        )

    print()
    passed: list[bool] = []

    def judge(description: str, ok: bool) -> None:
        passed.append(ok)
        name = f"{bundle.name} {direction}" if bundle.multilingual else bundle.name
        harness.verdict(f"{name}, {threads} thread(s), {description}", ok)

    by_name = {contender.name: contender for contender in contenders}
    onnx, torch_rate = rates["ONNX Runtime fp32", MAIN], rates["PyTorch eager", MAIN]

    def fastest(engine: str) -> tuple[str, float]:
        """The engine's faster way to use the threads: within a call, or as workers (when run)."""
        found = [(n, rates[n, MAIN]) for n in (engine, _workers_name(engine, threads)) if n in by_name]
        return max(found, key=lambda pair: pair[1])

    def rounds(fast: str, slow: str) -> str:
        """Each round's ratio of `fast`'s speed to `slow`'s (the rounds' spread beside a median)."""
        pairs = zip(by_name[slow].seconds[MAIN], by_name[fast].seconds[MAIN], strict=True)
        return "rounds " + " ".join(f"{slow_s / fast_s:.2f}x" for slow_s, fast_s in pairs)

    if ctranslate2 and threads == 1:
        ct2 = rates["CTranslate2 fp32", MAIN]
        judge(
            f"{MAIN}: ONNX Runtime fp32 >= {CT2_RATIO}x CTranslate2 fp32 ({onnx / ct2:.2f}x; "
            f"{rounds('ONNX Runtime fp32', 'CTranslate2 fp32')})",
            onnx >= CT2_RATIO * ct2,
        )
    elif ctranslate2:  # each engine's faster way to use the threads: within a call, or as workers
        (onnx_name, onnx_best), (ct2_name, ct2_best) = (
            fastest("ONNX Runtime fp32"),
            fastest("CTranslate2 fp32"),
        )
        print(
            f"{MAIN}, {threads} threads within each call: ONNX Runtime fp32 / CTranslate2 fp32 "
            f"{onnx / rates['CTranslate2 fp32', MAIN]:.2f}x (information: the targets take each engine's faster way)"
        )
        judge(
            f"{MAIN}: ONNX Runtime fp32 >= {CT2_RATIO}x CTranslate2 fp32, each the faster of {threads} threads "
            f"in one call or {threads} workers ({onnx_name} / {ct2_name}: {onnx_best / ct2_best:.2f}x; "
            f"{rounds(onnx_name, ct2_name)})",
            onnx_best >= CT2_RATIO * ct2_best,
        )
    judge(
        f"{MAIN}: ONNX Runtime fp32 >= {TORCH_RATIO:g}x PyTorch eager ({onnx / torch_rate:.2f}x"
        + (
            f"; int8 {rates['ONNX Runtime int8', MAIN] / torch_rate:.2f}x)"
            if "ONNX Runtime int8" in by_name
            else ")"
        ),
        onnx >= TORCH_RATIO * torch_rate,
    )
    for engine in (e for e in ("ONNX Runtime", "CTranslate2") if f"{e} int8" in by_name):
        fast, full = rates[f"{engine} int8", MAIN], rates[f"{engine} fp32", MAIN]
        delta = bleus[f"{engine} int8", MAIN] - bleus[f"{engine} fp32", MAIN]
        judge(
            f"{MAIN}: {engine} int8 within {INT8_BLEU} BLEU of fp32 ({delta:+.2f}) and faster "
            f"({fast / full:.2f}x)",
            abs(delta) <= INT8_BLEU and fast > full,
        )
    if args.fp16:
        judge_float16(rates, bleus, judge)
    recurrent = bundle.model_config.architecture != "transformer"
    for name in (c.name for c in contenders if c.name.endswith(SHORTLISTED)):
        full_name = name.removesuffix(SHORTLISTED)
        delta = bleus[name, MAIN] - bleus[full_name, MAIN]
        judge(
            f"{MAIN}: {name} BLEU no more than {SHORTLIST_BLEU} below the full vocabulary ({delta:+.2f}; "
            f"{_paired(by_name[full_name].outputs[MAIN], by_name[name].outputs[MAIN], references)})",
            delta >= -SHORTLIST_BLEU,
        )
        if recurrent:  # at several threads, each the faster of within a call or as workers
            (short_way, short_rate), (full_way, full_rate) = fastest(name), fastest(full_name)
            speed = short_rate / full_rate
            ways = (
                f"; each the faster of {threads} threads in one call or {threads} workers: "
                f"{short_way} / {full_way}; within each call "
                f"{rates[name, MAIN] / rates[full_name, MAIN]:.2f}x"
                if _workers_name(name, threads) in by_name
                else ""
            )
            judge(
                f"{MAIN}: {name} >= {SHORTLIST_SPEED}x {full_name} ({speed:.2f}x; "
                f"{rounds(short_way, full_way)}{ways})",
                speed >= SHORTLIST_SPEED,
            )
    return passed


def judge_float16(
    rates: dict[tuple[str, str], float],
    bleus: dict[tuple[str, str], float],
    judge: Callable[[str, bool], None],
) -> None:
    """The float16 targets at FP16 (beam 5, batch 64): ONNX Runtime fp16 >= CT2_RATIO x
    CTranslate2 fp16 (where that ran), and each engine's fp16 within INT8_BLEU of its fp32
    (its speed against fp32 printed beside: on a GPU the point of it, on a CPU below 1)."""
    if ("CTranslate2 fp16", FP16) in rates:
        onnx, ct2 = rates["ONNX Runtime fp16", FP16], rates["CTranslate2 fp16", FP16]
        judge(
            f"{FP16}: ONNX Runtime fp16 >= {CT2_RATIO}x CTranslate2 fp16 ({onnx / ct2:.2f}x)",
            onnx >= CT2_RATIO * ct2,
        )
    fp32_names = {
        "PyTorch": "PyTorch eager",
        "ONNX Runtime": "ONNX Runtime fp32",
        "CTranslate2": "CTranslate2 fp32",
    }
    for engine, full in fp32_names.items():
        half = f"{engine} fp16"
        if (half, FP16) in rates:
            delta = bleus[half, FP16] - bleus[full, FP16]
            judge(
                f"{FP16}: {half} within {INT8_BLEU} BLEU of fp32 ({delta:+.2f}; "
                f"{rates[half, FP16] / rates[full, FP16]:.2f}x its speed)",
                abs(delta) <= INT8_BLEU,
            )


def _paired(baseline: list[str], system: list[str], references: list[str]) -> str:
    """How far a BLEU difference stands out from the test set's noise: how many translations
    differ, and sacreBLEU's paired bootstrap p-value (1,000 resamples, `nmt compare`'s test)."""
    differ = sum(a != b for a, b in zip(baseline, system, strict=True))
    _, rows = significance([System("full", baseline), System("shortlist", system)], references, BOOTSTRAP)
    return f"{differ} of {len(system)} translations differ, paired bootstrap p = {rows[1]['BLEU']['p_value']:.3f}"


def bench_student(student_path: str, args: argparse.Namespace) -> list[bool]:
    """A distilled student decoding greedily against its teacher at beam 5, each on the engine
    `auto` picks for it (batch 32, the full vocabulary: no shortlists):
    sentences/s and BLEU, and the targets (>= {STUDENT_SPEED}x the teacher's sentences/s, no
    more than {STUDENT_BLEU} BLEU below it). The teacher is the bundle beside the student whose
    name and version its metadata records; a student without that metadata is refused."""
    student = load_bundle(student_path)
    if student.teacher is None:
        raise SystemExit(f'{student_path}: not a distilled bundle (no "distilled" in its bundle.json)')
    teacher = find_teacher(student)
    threads = torch.get_num_threads()
    texts = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, student.src_lang))[: args.sentences]
    references = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, student.tgt_lang))[
        : args.sentences
    ]
    contenders = [
        (Contender(role, Engine(str(bundle.path), args.device, "auto", {"threads": threads}), 0.0), bundle)
        for role, bundle in (("teacher", teacher), ("student", student))
    ]
    with running([c for c, _ in contenders], threads, texts):
        for round_ in range(args.rounds):
            for contender, bundle in contenders if round_ % 2 == 0 else contenders[::-1]:
                contender.run("student", texts, bundle.search, 32)
                print(
                    f"  round {round_ + 1}: {contender.name} {contender.seconds['student'][-1]:.2f} s",
                    flush=True,
                )
    for contender, bundle in contenders:
        contender.name = f"{contender.name} {bundle.name} (beam {bundle.search.beam_size}, {contender.kind})"
    rates = [len(texts) / harness.median(c.seconds["student"]) for c, _ in contenders]
    bleus = [bleu_only(c.outputs["student"], references)[0] for c, _ in contenders]
    print(
        f"\ndistilled student, {threads} thread(s), {len(texts)} sentences of {harness.TEST_SPLIT}, batch 32:"
    )
    harness.print_table(
        ["contender", "sent/s", "BLEU"],
        [
            [c.name, f"{rate:.1f}", f"{bleu:.2f}"]
            for (c, _), rate, bleu in zip(contenders, rates, bleus, strict=True)
        ],
    )
    speed, delta = rates[1] / rates[0], bleus[1] - bleus[0]
    ok = speed >= STUDENT_SPEED and delta >= -STUDENT_BLEU
    harness.verdict(
        f"{student.name}, {threads} thread(s): greedy >= {STUDENT_SPEED:g}x the teacher's beam-5 sentences/s "
        f"({speed:.2f}x) and no more than {STUDENT_BLEU} BLEU below it ({delta:+.2f})",
        ok,
    )
    return [ok]


def find_teacher(student: Bundle) -> Bundle:
    """The bundle beside `student` that its metadata names as its teacher (name and version)."""
    assert student.teacher is not None
    name, version = student.teacher["name"], student.teacher["version"]
    for folder in sorted(student.path.parent.iterdir()):
        if (folder / "bundle.json").is_file() and folder != student.path:
            candidate = load_bundle(folder, verify=False)
            if candidate.name == name:
                if candidate.version != version:
                    raise SystemExit(
                        f"{folder}: teacher {name} is version {candidate.version}, the student was distilled from {version}"
                    )
                return load_bundle(folder)
    raise SystemExit(
        f"{student.path}: its teacher {name} ({version}) is not beside it in {student.path.parent}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument(
        "--model", action="append", help=f"bundle folder; repeat for several (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--student", help="a distilled bundle: judged against its teacher (see bench_student)"
    )
    harness.add_direction_arguments(parser)
    parser.add_argument(
        "--thread-counts",
        help="comma-separated thread counts to run everything at, e.g. 1,2 (default: --threads)",
    )
    parser.add_argument(
        "--sentences", type=int, default=1000, help="first N test sentences (default: all 1000)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="64 sentences, and no batch-1 setting")
    parser.add_argument(
        "--shortlist-only",
        action="store_true",
        help="only the fp32 contenders with and without the bundle's shortlist, at beam 5, batch 32",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: every contender but int8 on the GPU (CTranslate2 where its build sees "
        "the GPU), and the fp16 ones (default: cpu)",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also PyTorch fp16, ONNX Runtime fp16 and CTranslate2 fp16 (where it computes in "
        f"float16 on the device), and the setting {FP16!r} (default: on with --device cuda)",
    )
    args = parser.parse_args()
    args.fp16 = args.fp16 or args.device.startswith("cuda")
    settings = dict(SETTINGS)
    if args.quick:
        args.sentences = min(args.sentences, 64)
        del settings["beam 5, batch 1"]
    if args.shortlist_only:
        settings = {MAIN: SETTINGS[MAIN]}
    if args.fp16:
        settings[FP16] = (5, 64)
    models = args.model or ([] if args.student else [DEFAULT_MODEL])
    counts = [int(n) for n in args.thread_counts.split(",")] if args.thread_counts else [args.threads]
    passed = []
    for threads in counts:
        harness.set_threads(threads)
        for model in models:
            passed += bench_bundle(model, args, settings)
        if args.student:
            passed += bench_student(args.student, args)
    harness.verdict("every target above", all(passed))


if __name__ == "__main__":
    main()
