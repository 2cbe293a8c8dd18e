"""The training loop: exact resume, signals, kill -9, checkpoint averaging, DDP with 2 processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt.bundle import load_bundle
from nmt.checkpoint import average_state_dicts, load_checkpoint, step_checkpoints
from nmt.config import parse_recipe
from nmt.run import RunDir
from nmt.train import train
from tests.conftest import ROOT, assert_one_line_error, run_nmt, tiny_recipe, write_recipe


def _train(corpus: Path, out: Path, resume: bool = False, **options) -> Path:
    return train(parse_recipe(tiny_recipe(corpus, out, **options)), resume=resume)


def test_resume_continues_exactly(tiny_corpus, tmp_path):
    # 14 steps cross at least one epoch end (validation, a new shuffle) with batches of 3000 tokens
    options = {"batch_tokens": 3000, "save_every_steps": 0}
    _train(tiny_corpus, tmp_path / "straight", max_steps=14, **options)
    _train(tiny_corpus, tmp_path / "split", max_steps=5, **options)
    _train(tiny_corpus, tmp_path / "split", resume=True, max_steps=14, **options)

    straight = load_checkpoint(RunDir(tmp_path / "straight").checkpoint(14))
    split = load_checkpoint(RunDir(tmp_path / "split").checkpoint(14))
    assert straight["progress"]["epoch"] >= 1, "the run should have crossed an epoch boundary"
    # where the data stands; (best BLEU and the early-stopping count may differ: the split run
    # also validated when it stopped at step 5)
    position = ("epoch", "batch", "step")
    assert [straight["progress"][k] for k in position] == [split["progress"][k] for k in position]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
    assert straight["optimizer"]["state"][0]["exp_avg"].equal(split["optimizer"]["state"][0]["exp_avg"])
    steps = [r["step"] for r in RunDir(tmp_path / "split").log.read() if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "the metrics log must not repeat steps after a resume"


def _start(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nmt", "train", "--config", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_finishes(signum, tiny_corpus, tmp_path):
    run = RunDir(tmp_path / "run")
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=100_000, save_every_steps=0)
    )
    proc = _start(recipe)
    _wait_for(lambda: any(r["kind"] == "train" for r in run.log.read()), proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert "--resume" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    [checkpoint] = step_checkpoints(run.checkpoints)
    step = load_checkpoint(checkpoint)["progress"]["step"]
    assert step >= 2

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=step + 2))
    result = run_nmt("train", "--config", str(recipe), "--resume")
    assert Path(result.stdout.strip()) == run.bundle
    assert load_checkpoint(run.checkpoint(step + 2))["progress"]["step"] == step + 2


def test_a_closed_output_pipe_never_loses_the_save(tiny_corpus, tmp_path):
    # `nmt train ... 2>&1 | tee log`, then Ctrl-C: tee is gone before the trainer's next write
    run = RunDir(tmp_path / "run")
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=100_000, save_every_steps=0)
    )
    proc = _start(recipe)
    _wait_for(lambda: any(r["kind"] == "train" for r in run.log.read()), proc)
    proc.stdout.close()
    proc.stderr.close()  # the progress bar writes to it at least every second
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    last = load_checkpoint(step_checkpoints(run.checkpoints)[-1])["progress"]
    assert last["batch"] > 0, "the newest checkpoint must be the one saved when the pipe closed"

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=last["step"] + 2))
    run_nmt("train", "--config", str(recipe), "--resume")
    assert load_checkpoint(run.checkpoint(last["step"] + 2))["progress"]["step"] == last["step"] + 2


def test_kill_9_leaves_good_checkpoints_and_resume_works(tiny_corpus, tmp_path):
    run = RunDir(tmp_path / "run")
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=100_000, save_every_steps=1)
    )
    proc = _start(recipe)
    _wait_for(lambda: len(step_checkpoints(run.checkpoints)) >= 3, proc)
    proc.kill()
    proc.wait()
    found = step_checkpoints(run.checkpoints)
    for path in found:
        load_checkpoint(path)  # every visible checkpoint is whole: writes are atomic
    last = load_checkpoint(found[-1])["progress"]["step"]

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run.path, max_steps=last + 3))
    (run.checkpoints / ".step-99999999.pt.abc.tmp").write_bytes(b"torn")  # as a kill mid-write leaves
    run_nmt("train", "--config", str(recipe), "--resume")
    assert load_checkpoint(run.checkpoint(last + 3))["progress"]["step"] == last + 3
    assert not list(run.checkpoints.glob(".*.tmp"))


def test_max_seconds_stops_after_that_much_training_and_writes_the_bundle(tiny_corpus, tmp_path):
    # no step limit: only the time budget can end this run before its 1000 epochs
    bundle = _train(tiny_corpus, tmp_path / "run", max_steps=0, max_epochs=1000, max_seconds=1.0)
    progress = load_checkpoint(step_checkpoints(RunDir(tmp_path / "run").checkpoints)[-1])["progress"]
    assert bundle.is_dir()
    assert 1.0 <= progress["seconds"] < 30, progress
    assert progress["epoch"] < 1000


def test_resume_with_another_recipe_is_refused_in_one_line_and_changes_nothing(tiny_corpus, tmp_path):
    run = RunDir(tmp_path / "run")
    _train(tiny_corpus, run.path, max_steps=2, save_every_steps=0)
    stored = run.recipe_file.read_text()
    checkpoints = sorted(run.checkpoints.iterdir())
    changed = tiny_recipe(tiny_corpus, run.path, max_steps=4, save_every_steps=0, lr=0.01)
    changed["model"]["d_model"] = 64
    result = run_nmt(
        "train", "--config", str(write_recipe(tmp_path / "r.yaml", changed)), "--resume", check=False
    )
    assert_one_line_error(result, "model.d_model", "train.lr", "--resume")
    assert "train.max_steps" not in result.stderr  # may change on resume
    assert run.recipe_file.read_text() == stored
    assert sorted(run.checkpoints.iterdir()) == checkpoints


def test_average_takes_epoch_end_checkpoints_unless_told_otherwise(tiny_corpus, tmp_path):
    # a checkpoint every step, 3000-token batches: several epoch ends among many mid-epoch saves
    run = RunDir(tmp_path / "run")
    _train(tiny_corpus, run.path, batch_tokens=3000, max_steps=20, save_every_steps=1, keep_last=30)
    ends = [p.name for p in step_checkpoints(run.checkpoints) if load_checkpoint(p)["progress"]["batch"] == 0]
    assert 2 <= len(ends) < 20
    result = run_nmt("average", "--run", str(run.path), "--last", "2", "--out", str(tmp_path / "avg"))
    assert load_bundle(tmp_path / "avg").meta["training"]["averaged"] == ends[-2:]
    assert "epoch-end" in result.stderr and ends[-1] in result.stderr
    run_nmt("average", "--run", str(run.path), "--last", "2", "--any-step", "--out", str(tmp_path / "any"))
    last_two = [p.name for p in step_checkpoints(run.checkpoints)[-2:]]
    assert load_bundle(tmp_path / "any").meta["training"]["averaged"] == last_two


def test_average_is_the_mean_of_the_weights(tiny_corpus, tmp_path):
    _train(tiny_corpus, tmp_path / "run", max_steps=4, save_every_steps=1)
    paths = step_checkpoints(RunDir(tmp_path / "run").checkpoints)[-3:]
    mean = average_state_dicts(paths)
    weights = [load_checkpoint(p)["model"] for p in paths]
    name = next(iter(mean))
    expected = sum(w[name].double() for w in weights) / 3
    assert torch.allclose(mean[name].double(), expected, atol=1e-6)
    assert not torch.equal(weights[0][name], weights[-1][name])


def test_torchrun_two_processes_on_cpu(tiny_corpus, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_corpus, tmp_path / "run", max_steps=4))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "nmt",
            "train",
            "--config",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = RunDir(tmp_path / "run").bundle
    meta = __import__("json").loads((bundle / "bundle.json").read_text())
    assert meta["training"]["processes"] == 2
    assert meta["training"]["steps"] == 4
    # rank 0 prepared the data once (one encoding per file), the other rank only mapped it
    assert result.stderr.count("preparing the data in") == 1
    assert result.stderr.count("encoding ") == 4  # train and val, two languages
    run_nmt("translate", "--model", str(bundle), stdin="A man.\n")
