"""Data scale: memory and start-up time of `nmt data prepare` and `nmt train` as the corpus grows.

Multi30k's train set is repeated x1, x10 and x35 (29k to 1,015k pairs) into a temporary folder;
for each scale the real commands run as child processes (`python -m nmt ...`), watched from here
through /proc every 50 ms:

- `nmt data prepare`: peak RSS of its process tree (the encoding workers included, summed).
  Target: at most 1.5 GB at the largest scale.
- `nmt train` on that prepared data (`train.max_steps` = warm-up + timed steps, one log record per
  step): peak RSS of the process; the time from the command's start to the end of its first step
  (when step 1's record appears in metrics.jsonl); and steady-state training tokens/s, the median
  of the per-step tokens/s the trainer logs after the warm-up steps. Targets at the largest scale
  against the smallest: peak RSS <= 1.3x, time to the first step <= 1.5x, tokens/s >= 0.95x. The
  train runs go round-robin over the scales `--rounds` times, and each figure is the median of
  its rounds (the machine may be shared).
- two DDP processes (`torch.distributed.run`, gloo on CPU) training on the largest scale's data:
  their summed unique memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, the
  pages no other process shares; peak over the run) against one process's USS on the same data.
  Target: at most 1.5x, i.e. the two ranks map one copy of the data (page cache) rather than
  holding one each.

Validation is cut to a few sentences with greedy search (it runs once, after the timed steps).

    .venv/bin/python benchmarks/data_scale.py --threads 1          # ~10 min on 2 cores
    .venv/bin/python benchmarks/data_scale.py --quick              # x1, x2, x3; a few steps
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
import yaml

from nmt.config import apply_override

PREPARE_RSS_LIMIT = 1.5e9
RSS_RATIO, FIRST_STEP_RATIO, TOKENS_RATIO, DDP_USS_RATIO = 1.3, 1.5, 0.95, 1.5
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- watching /proc


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (those alive now)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


def uss(pid: int) -> int:
    """Unique set size: the process's private pages (what it would free on exit)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return sum(
        int(fields[key].split()[0]) * 1024 for key in ("Private_Clean", "Private_Dirty") if key in fields
    )


def mapped_data(pid: int, folder: Path) -> tuple[int, int]:
    """(resident, private) bytes of the process's mappings of files under `folder` (/proc/PID/smaps):
    pages of the prepared data that it maps, and those of them no other process maps."""
    resident = private = 0
    inside = False
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and fields[5].startswith(str(folder))
        elif inside and fields[0] == "Rss:":
            resident += int(fields[1]) * 1024
        elif inside and fields[0] in ("Private_Clean:", "Private_Dirty:"):
            private += int(fields[1]) * 1024
    return resident, private


def is_python(pid: int) -> bool:
    try:
        return (
            "python" in Path(f"/proc/{pid}/comm").read_text()
            or b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        )
    except OSError:
        return False


class Watch:
    """Runs a command and samples its process tree every 50 ms until it exits."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        metrics: Path | None = None,
        ddp: bool = False,
        data: Path | None = None,
    ):
        self.peak_rss = 0  # summed over the tree
        self.data_resident = self.data_private = 0  # the training processes' maps of `data`, summed
        self.peak_uss = 0  # summed over the training processes (the leaves for a DDP launch)
        self.first_step: float | None = None  # seconds from start to step 1's metrics record
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                tree = process_tree(process.pid)
                self.peak_rss = max(self.peak_rss, sum(rss(pid) for pid in tree))
                workers = [pid for pid in tree if not _children(pid)] if ddp else [process.pid]
                if not ddp or len(workers) >= 2:
                    self.peak_uss = max(self.peak_uss, sum(uss(pid) for pid in workers if is_python(pid)))
                    if data is not None:
                        maps = [mapped_data(pid, data) for pid in workers]
                        if sum(r for r, _ in maps) > self.data_resident:
                            self.data_resident = sum(r for r, _ in maps)
                            self.data_private = sum(p for _, p in maps)
                if (
                    metrics is not None
                    and self.first_step is None
                    and metrics.is_file()
                    and '"kind": "train"' in metrics.read_text(encoding="utf-8")
                ):
                    self.first_step = time.perf_counter() - started
                time.sleep(0.05)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        self.stdout, self.stderr = process.communicate()
        done.set()
        thread.join()
        self.seconds = time.perf_counter() - started
        if process.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{self.stderr[-3000:]}")


# --------------------------------------------------------------------------- the corpora


def write_scaled(source: Path, out: Path, times: int) -> int:
    """`source` (plain or .gz) repeated `times` times into `out` (.gz, fast compression); its lines."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as handle:
        data = handle.read()
    if not data.endswith(b"\n"):
        data += b"\n"
    with gzip.open(out, "wb", compresslevel=1) as handle:
        for _ in range(times):
            handle.write(data)
    return data.count(b"\n") * times


def write_recipe(args: argparse.Namespace, path: Path, overrides: list[str]) -> Path:
    raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    for override in [*overrides, *args.overrides]:
        apply_override(raw, override)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def tokens_per_s(metrics: Path, warmup: int) -> float:
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    steady = [r["tokens_per_s"] for r in records if r.get("kind") == "train" and r["step"] > warmup]
    return statistics.median(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument(
        "--scales", default="1,10,35", help="times the train set is repeated (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed training steps per run (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="train runs per scale, round-robin (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="prepare's encoding processes (0: the CPU count)"
    )
    parser.add_argument("--quick", action="store_true", help="x1, x2, x3; 4 timed steps after 2; one round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    if args.quick:
        args.scales, args.steps, args.warmup, args.rounds = "1,2,3", 4, 2, 1
    scales = [int(s) for s in args.scales.split(",")]
    smallest, largest = min(scales), max(scales)

    langs = harness.load_benchmark_recipe(args).data
    src_lang, tgt_lang = langs.src_lang, langs.tgt_lang
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = str(args.threads)
    nmt = [sys.executable, "-m", "nmt"]
    root = Path(tempfile.mkdtemp(prefix="data-scale-"))
    try:
        recipes: dict[int, Path] = {}
        prepared: dict[int, Watch] = {}
        pairs: dict[int, int] = {}
        for scale in scales:
            folder = root / f"x{scale}"
            folder.mkdir()
            for lang in (src_lang, tgt_lang):
                pairs[scale] = write_scaled(
                    harness.corpus_file(args.data, "train", lang), folder / f"train.{lang}.gz", scale
                )
            recipes[scale] = write_recipe(
                args,
                folder / "recipe.yaml",
                [
                    f"data.train={{src: {folder / f'train.{src_lang}.gz'}, tgt: {folder / f'train.{tgt_lang}.gz'}}}",
                    f"data.valid={{src: {harness.corpus_file(args.data, 'val', src_lang)}, "
                    f"tgt: {harness.corpus_file(args.data, 'val', tgt_lang)}}}",
                    f"data.prepared={folder / 'prepared'}",
                    f"train.out_dir={folder / 'run'}",
                    "train.device=cpu",
                    f"train.max_steps={args.warmup + args.steps}",
                    "train.log_every_steps=1",
                    "train.save_every_steps=0",
                    "train.eval_max_sentences=8",
                    "search.beam_size=1",
                ],
            )
            workers = ["--workers", str(args.workers)] if args.workers else []
            prepared[scale] = Watch([*nmt, "data", "prepare", "--config", str(recipes[scale]), *workers], env)
            print(f"prepared x{scale} in {prepared[scale].seconds:.1f} s", file=sys.stderr)

        runs: dict[int, list[tuple[Watch, float]]] = {scale: [] for scale in scales}
        for round_ in range(args.rounds):
            for scale in scales:
                run = root / f"x{scale}" / "run"
                shutil.rmtree(run, ignore_errors=True)
                watch = Watch([*nmt, "train", "--config", str(recipes[scale])], env, run / "metrics.jsonl")
                runs[scale].append((watch, tokens_per_s(run / "metrics.jsonl", args.warmup)))
                print(f"trained x{scale} (round {round_ + 1}) in {watch.seconds:.1f} s", file=sys.stderr)

        ddp_run = root / f"x{largest}" / "run-ddp"
        raw = yaml.safe_load(recipes[largest].read_text(encoding="utf-8"))
        raw["train"]["out_dir"] = str(ddp_run)  # the same prepared data (data.prepared)
        ddp_recipe = root / "ddp.yaml"
        ddp_recipe.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        ddp = Watch(
            [*launcher, "-m", "nmt", "train", "--config", str(ddp_recipe)],
            env,
            ddp_run / "metrics.jsonl",
            ddp=True,
            data=root / f"x{largest}" / "prepared",
        )
        print(f"trained x{largest} with 2 DDP processes in {ddp.seconds:.1f} s", file=sys.stderr)

        def med(scale: int, figure) -> float:
            return statistics.median(figure(watch, tps) for watch, tps in runs[scale])

        rows = []
        for scale in scales:
            rows.append(
                [
                    f"x{scale}",
                    f"{pairs[scale]:,}",
                    f"{prepared[scale].seconds:.1f}",
                    f"{prepared[scale].peak_rss / 1e6:,.0f}",
                    f"{med(scale, lambda w, t: w.first_step or w.seconds):.1f}",
                    f"{med(scale, lambda w, t: w.peak_rss) / 1e6:,.0f}",
                    f"{med(scale, lambda w, t: w.peak_uss) / 1e6:,.0f}",
                    f"{med(scale, lambda w, t: t):,.0f}",
                ]
            )
        harness.print_table(
            [
                "scale",
                "pairs",
                "prepare s",
                "prepare peak RSS MB",
                "train: s to step 1",
                "train peak RSS MB",
                "train USS MB",
                "train tokens/s",
            ],
            rows,
        )
        print(
            f"DDP x{largest}, 2 processes: summed USS {ddp.peak_uss / 1e6:,.0f} MB, "
            f"peak RSS of the tree {ddp.peak_rss / 1e6:,.0f} MB; the prepared data's pages in the two "
            f"processes: {ddp.data_resident / 1e6:,.1f} MB resident (summed), {ddp.data_private / 1e6:,.1f} MB "
            "of them private to one process (0: every page is one copy, mapped by both)"
        )
        print()

        prepare_rss = prepared[largest].peak_rss
        rss_ratio = med(largest, lambda w, t: w.peak_rss) / med(smallest, lambda w, t: w.peak_rss)
        first = med(largest, lambda w, t: w.first_step or w.seconds) / med(
            smallest, lambda w, t: w.first_step or w.seconds
        )
        tokens = med(largest, lambda w, t: t) / med(smallest, lambda w, t: t)
        ddp_ratio = ddp.peak_uss / med(largest, lambda w, t: w.peak_uss)
        results = [
            (
                f"prepare peak RSS at x{largest} {prepare_rss / 1e9:.2f} GB <= 1.5 GB",
                prepare_rss <= PREPARE_RSS_LIMIT,
            ),
            (
                f"train peak RSS x{largest} / x{smallest} = {rss_ratio:.2f} <= {RSS_RATIO}",
                rss_ratio <= RSS_RATIO,
            ),
            (
                f"time to the first step x{largest} / x{smallest} = {first:.2f} <= {FIRST_STEP_RATIO}",
                first <= FIRST_STEP_RATIO,
            ),
            (
                f"training tokens/s x{largest} / x{smallest} = {tokens:.2f} >= {TOKENS_RATIO}",
                tokens >= TOKENS_RATIO,
            ),
            (
                f"2 DDP processes' summed USS / one process's at x{largest} = {ddp_ratio:.2f} <= {DDP_USS_RATIO}",
                ddp_ratio <= DDP_USS_RATIO,
            ),
            (
                # what the USS ratio stands for: one copy of the data, whatever each rank's own
                # runtime, model, optimizer and activations take (those are private by nature)
                f"the prepared data mapped once by 2 DDP processes: {ddp.data_private / 1e6:,.1f} MB of "
                f"{ddp.data_resident / 1e6:,.1f} MB resident private to one process <= 1%",
                ddp.data_resident > 0 and ddp.data_private <= 0.01 * ddp.data_resident,
            ),
        ]
        for description, passed in results:
            harness.verdict(description, passed)
        harness.verdict(
            f"{sum(p for _, p in results)} of {len(results)} data-scale targets met",
            all(p for _, p in results),
        )
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
