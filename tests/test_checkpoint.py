"""Checkpoints: plain tensors and data round-trip; a file whose unpickling would run code is
refused without running it; torn and foreign files are one-line errors naming the file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.errors import NmtError
from tests.conftest import write_crafted_checkpoint


def _plain_payload() -> dict:
    """What `Trainer.save` writes, in miniature: tensors and plain data only."""
    return {
        "model": {"w": torch.randn(3, 2), "b": torch.zeros(2, dtype=torch.float16)},
        "optimizer": {"state": {0: {"step": torch.tensor(4.0)}}, "param_groups": [{"betas": (0.9, 0.98)}]},
        "scheduler": {"best": -math.inf, "lr_lambdas": [None], "mode": "max"},
        "scaler": {},
        "rng": {"torch": torch.get_rng_state(), "cuda": [torch.get_rng_state()]},
        "progress": {"epoch": 1, "batch": 7, "step": 42, "best_bleu": -1.0, "seconds": 3.5},
        "recipe": {"name": "tiny", "train": {"lr": 0.003, "flags": [True, False]}},
    }


def test_plain_checkpoint_round_trips(tmp_path):
    payload = _plain_payload()
    save_checkpoint(tmp_path / "step-00000042.pt", payload)
    loaded = load_checkpoint(tmp_path / "step-00000042.pt")
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.float16
    assert torch.equal(loaded["rng"]["torch"], payload["rng"]["torch"])
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert loaded["scheduler"] == payload["scheduler"]
    assert loaded["progress"] == payload["progress"] and loaded["recipe"] == payload["recipe"]


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    crafted = write_crafted_checkpoint(tmp_path / "step-00000001.pt", target)
    with pytest.raises(NmtError, match="not a plain-tensor checkpoint") as caught:
        load_checkpoint(crafted)
    assert str(crafted) in str(caught.value) and "\n" not in str(caught.value)
    assert not target.exists()
    # the file is live: the unpickler that was used before runs its code
    torch.load(crafted, weights_only=False)
    assert target.exists()


def test_a_numpy_array_is_refused_not_loaded(tmp_path):
    """What a careless addition to the payload (numpy RNG state, say) would make of a checkpoint."""
    payload = _plain_payload() | {"rng": {"numpy": np.zeros(3)}}
    save_checkpoint(tmp_path / "c.pt", payload)
    with pytest.raises(NmtError, match="not a plain-tensor checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b"torn"), "not a readable checkpoint"),
        (lambda path: path.write_bytes(b""), "not a readable checkpoint"),
        (
            lambda path: torch.save({"w": torch.ones(2)}, path),
            r"not a checkpoint of nmt train \(no 'model'\)",
        ),
        (lambda path: torch.save([torch.ones(2)], path), "not a checkpoint of nmt train"),
    ],
    ids=["garbage", "empty", "bare-state-dict", "list"],
)
def test_torn_or_foreign_files_are_one_line_errors(tmp_path, write, message):
    path = tmp_path / "c.pt"
    write(path)
    with pytest.raises(NmtError, match=message) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _plain_payload())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(NmtError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(NmtError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
