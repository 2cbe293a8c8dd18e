"""Training checkpoints: written atomically, found again on resume, averaged.

A checkpoint is one `torch.save` file holding the model, optimizer, scheduler and scaler
states, the RNG states and the position in the data, so `--resume` continues exactly where
the run stopped. It holds tensors and plain data only and is read with `weights_only=True`,
so loading a crafted file cannot run code. Files are written to a temporary name, flushed
to disk and renamed, so a kill at any moment leaves either the old file or the new one,
never a torn one.

Layout of a run's `checkpoints/` folder: `step-00001234.pt` (the last `keep_last` of them)
and `best.pt` (the best validation BLEU so far).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nmt.errors import NmtError

_STEP_FILE = re.compile(r"step-(\d+)\.pt$")
# what `Trainer.save` writes; `average` and `--resume` read these
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "progress", "recipe")


def readable_mode(directory: bool = False) -> int:
    """The permissions a normal `open` would give (0644 / 0755 under the usual umask);
    mkstemp and mkdtemp make private files, which a server running as another user can't read."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write(path: Path, write) -> None:
    """Call write(file_object) on a temporary file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, readable_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_folder(path: Path, fill: Callable[[Path], object]) -> Path:
    """Call fill(folder) on a temporary folder beside `path`, then swap it in for `path`.

    A failure or a kill while filling leaves the previous folder (if any) as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        os.chmod(tmp, readable_mode(directory=True))
        fill(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` atomically. It must hold only tensors and plain data (dict, list, tuple,
    str, int, float, bool, None): `load_checkpoint` reads with `weights_only=True` and refuses
    anything else, so a numpy array or a Python object here would make the run unresumable."""
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing any other kind of pickle.

    `weights_only=True` rebuilds tensors and plain data only: a full unpickler would run
    whatever code a crafted file names (`nmt average` and `--resume` read files that may come
    from elsewhere). Raises NmtError naming the file, never a traceback."""
    if not path.is_file():
        raise NmtError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # an object weights_only does not allow: nothing of it ran
        raise NmtError(
            f"{path}: not a plain-tensor checkpoint (it holds objects other than tensors and "
            "plain data); refused without running it"
        ) from None
    except Exception as error:  # a truncated or foreign file: name it, never a traceback
        raise NmtError(f"{path}: not a readable checkpoint ({error.__class__.__name__})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise NmtError(f"{path}: not a checkpoint of nmt train (no {missing[0]!r})")
    return state


def step_checkpoints(folder: Path) -> list[Path]:
    """The `step-*.pt` files in a folder, oldest step first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := _STEP_FILE.search(p.name))]
    return [path for _, path in sorted(found)]


def epoch_end_checkpoints(folder: Path) -> list[Path]:
    """The `step-*.pt` files written at the end of an epoch (not mid-epoch or on a signal), oldest first."""
    return [path for path in step_checkpoints(folder) if load_checkpoint(path)["progress"]["batch"] == 0]


def latest_checkpoint(folder: Path) -> Path | None:
    steps = step_checkpoints(folder)
    return steps[-1] if steps else None


def remove_partial_writes(folder: Path) -> None:
    """Delete temporary files that a killed process left half-written (never a real checkpoint)."""
    for partial in folder.glob(".*.tmp"):
        partial.unlink(missing_ok=True)


def prune_checkpoints(folder: Path, keep_last: int) -> None:
    for old in step_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (Vaswani et al. 2017)."""
    if not paths:
        raise NmtError("average: no checkpoints given")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_checkpoint(path)["model"]
        if total and weights.keys() != total.keys():
            raise NmtError(f"{path}: its weights do not match those of {paths[0]}")
        for name, tensor in weights.items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(paths)).float() for name, tensor in total.items()}
