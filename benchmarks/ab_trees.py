"""CPU time of the same translations by two or more checkouts of nmt, each run in a process of
its own, taking turns: what a change to the search or a backend saves, measured end to end.

    git worktree add /tmp/before c8ab324
    .venv/bin/python benchmarks/ab_trees.py --tree /tmp/before --tree . --rounds 4

Each tree first exports the bundle into a copy of its own with its own code (trees may differ in
export format), then every round runs `Translator.translate_best` over the first N sentences of
test_2016_flickr once per tree (beam 5, batch 32, 1 thread), each in a fresh process with that
tree first on sys.path, the order alternating between rounds. Printed per tree: the CPU seconds
of each round, in all and outside ONNX Runtime's runs (the search, binding, tokenization), their
medians, and whether it gave the first tree's translations. CPU time, not wall-clock time: a
one-thread run's CPU time does not count the time it waited for a core on a shared box.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

# run in each tree's process: export (argv: bundle, copy, engine) or translate (argv: copy,
# engine, sentences file, count, shortlist 0|1) -> JSON on stdout
CHILD = r"""
import json, shutil, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import nmt
from nmt.bundle import load_bundle
mode = sys.argv[1]
if mode == "export":
    source, copy, engine = sys.argv[2:5]
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("onnx", "ct2"))
    if engine == "onnx":
        from nmt.export.onnx import export_onnx
        export_onnx(load_bundle(copy))
    elif engine == "ctranslate2":
        from nmt.export.ctranslate2 import export_ctranslate2
        export_ctranslate2(load_bundle(copy))
    print(json.dumps({"nmt": nmt.__file__}))
    sys.exit()
import onnxruntime as ort
from nmt.translator import Translator
copy, engine, texts_file, count = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
shortlist = sys.argv[6] == "1"
texts = json.loads(Path(texts_file).read_text())[:count]
bundle = load_bundle(copy)
search = bundle.search.model_copy(update={"beam_size": 5, "n_best": 1})
translator = Translator.from_bundle(bundle, "cpu", engine, batch_size=32, shortlist=shortlist)
translator.translate_best(texts[:32], search)
inside = [0.0]
plain = ort.InferenceSession.run_with_iobinding
def timed(self, *args):
    start = time.process_time()
    try:
        return plain(self, *args)
    finally:
        inside[0] += time.process_time() - start
ort.InferenceSession.run_with_iobinding = timed
start = time.process_time()
outputs = translator.translate_best(texts, search)
total = time.process_time() - start
print(json.dumps({"nmt": nmt.__file__, "total": total, "outside": total - inside[0], "outputs": outputs}))
"""


def _child(tree: Path, *args: str) -> dict:
    """Run CHILD with `tree`'s nmt (paths in `args` absolute). It runs in the tree's folder: `python
    -c` puts the working directory first on sys.path, ahead of PYTHONPATH, so a child started from
    another checkout would import that checkout's nmt whatever PYTHONPATH says (until session 18
    every tree ran the nmt of the folder this script was started from); each child says which nmt
    it imported, and one from elsewhere stops the run."""
    root = tree.resolve()
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{tree}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["nmt"]).resolve().is_relative_to(root):
        raise SystemExit(f"{tree}: the child imported nmt from {result['nmt']}, not from this tree")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree", action="append", required=True, help="a checkout of nmt (repeat: 2 or more)"
    )
    parser.add_argument("--model", default="models/transformer-en-de", help="bundle (default: %(default)s)")
    parser.add_argument("--engine", default="onnx", choices=["onnx", "ctranslate2", "torch"])
    parser.add_argument("--data", default="data/multi30k", help="folder with test_2016_flickr.<src>.gz")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shortlist", action="store_true", help="decode with the bundle's shortlist")
    args = parser.parse_args()
    trees = [Path(tree) for tree in args.tree]
    if len(trees) < 2:
        raise SystemExit("--tree: give at least two")
    from nmt.bundle import load_bundle
    from nmt.data import read_lines

    bundle = load_bundle(args.model)
    texts = read_lines(harness.corpus_file(Path(args.data), "test_2016_flickr", bundle.src_lang))
    with tempfile.TemporaryDirectory(prefix="ab-trees-") as tmp:
        texts_file = Path(tmp).resolve() / "texts.json"
        texts_file.write_text(json.dumps(texts[: args.sentences]))
        copies = [str(Path(tmp).resolve() / f"tree{i}") for i in range(len(trees))]
        for tree, copy in zip(trees, copies, strict=True):
            _child(tree, "export", str(bundle.path.resolve()), copy, args.engine)
        runs: dict[int, list[dict]] = {i: [] for i in range(len(trees))}
        for round_ in range(args.rounds):
            order = range(len(trees)) if round_ % 2 == 0 else reversed(range(len(trees)))
            for i in order:
                run = _child(
                    trees[i],
                    "translate",
                    copies[i],
                    args.engine,
                    str(texts_file),
                    str(args.sentences),
                    "1" if args.shortlist else "0",
                )
                runs[i].append(run)
                print(f"  round {round_ + 1}: {trees[i]} {run['total']:.3f} s CPU", flush=True)
    print(
        f"\n{bundle.name}, {args.engine}{' with its shortlist' if args.shortlist else ''}, {args.sentences} sentences of test_2016_flickr, beam 5, batch 32, "
        f"1 thread, {args.rounds} rounds (CPU seconds):"
    )
    first = runs[0][0]["outputs"]
    rows = []
    for i, tree in enumerate(trees):
        totals = [run["total"] for run in runs[i]]
        outside = [run["outside"] for run in runs[i]]
        same = sum(a == b for a, b in zip(runs[i][0]["outputs"], first, strict=True))
        rows.append(
            [
                str(tree),
                f"{harness.median(totals):.3f}",
                " ".join(f"{t:.2f}" for t in totals),
                f"{harness.median(outside):.3f}",
                " ".join(f"{t:.3f}" for t in outside),
                f"{same}/{len(first)}",
            ]
        )
    harness.print_table(
        ["tree", "median", "in all", "median outside ORT", "outside ONNX Runtime's runs", "= first tree"],
        rows,
    )


if __name__ == "__main__":
    main()
