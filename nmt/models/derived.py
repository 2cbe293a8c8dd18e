"""Tensors a decoding step derives from the weights, made once and kept while the weights stay.

A step may want its weights in another form than training keeps them: the Transformer's query,
key and value projections as one matrix, a recurrent decoder's first input product for every
target token (`nmt.models.cells.TokenGates`). `Derived` holds one such tensor, made without
gradients, and makes it again when any weight it came from is another tensor or was changed in
place (an optimizer step, loading weights, moving or casting the model: PyTorch counts in-place
changes in each tensor's version). It is a plain tensor even when made in inference mode, so the
ONNX exporter may trace it (as a constant of the graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class Derived(Generic[T]):
    def __init__(self) -> None:
        self._key: tuple[tuple[object, ...], ...] = ()
        self._value: T | None = None

    def get(self, weights: Sequence[Tensor], make: Callable[[], T]) -> T:
        """`make()`'s value, made anew only when one of `weights` is not as it was last time."""
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in weights)
        if self._value is None or key != self._key:
            with torch.inference_mode(False), torch.no_grad():
                self._value = make()
            self._key = key
        return self._value
