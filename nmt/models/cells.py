"""The recurrent cells behind `cell: lstm | gru | rnn`, with their state as a dict of batch-first tensors.

`nn.LSTM`, `nn.GRU` and `nn.RNN` (Elman's, tanh) take the same arguments and give the same outputs;
they differ only in the state they carry: the LSTM (h, c), the GRU and the Elman RNN h alone. The
functions here hide that difference from the models: a state is {"h": ..., "c": ...} for the LSTM
and {"h": ...} for the other two, every tensor batch first, (B, L, D * H), so a search reorders it
on dim 0 and an exporter sees one graph input per key. PyTorch's modules want (L * D, B, H) and a
tuple for the LSTM, hence the conversions in `run_cell` and `final_state`.

Letters: B batch, T steps, L layers, D directions (1 or 2), H hidden size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import Tensor, nn

Cell = Literal["lstm", "gru", "rnn"]


def build_cell(
    cell: Cell, input_size: int, hidden_size: int, layers: int, dropout: float, bidirectional: bool = False
) -> nn.RNNBase:
    """A batch-first multi-layer `cell` network; `dropout` between layers (none with one layer)."""
    kind: type[nn.RNNBase]
    match cell:
        case "lstm":
            kind = nn.LSTM
        case "gru":
            kind = nn.GRU
        case "rnn":
            kind = nn.RNN  # nonlinearity="tanh" by default: Elman's network
        case _:
            raise ValueError(f"unknown cell: {cell!r}")
    return kind(
        input_size,
        hidden_size,
        layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if layers > 1 else 0.0,
    )


def state_keys(rnn: nn.RNNBase) -> tuple[str, ...]:
    """The keys of the state `rnn` carries: ("h", "c") for an LSTM, ("h",) for a GRU or an RNN."""
    return ("h", "c") if isinstance(rnn, nn.LSTM) else ("h",)


def final_state(rnn: nn.RNNBase, final: Tensor | tuple[Tensor, ...]) -> dict[str, Tensor]:
    """The final state PyTorch returns, (L * D, B, H) each, -> {key: (B, L, D * H)}.

    The final states of both directions of a layer are concatenated."""
    tensors = final if isinstance(final, tuple) else (final,)
    return {
        key: tensor.unflatten(0, (rnn.num_layers, -1)).permute(2, 0, 1, 3).flatten(2)
        for key, tensor in zip(state_keys(rnn), tensors, strict=True)
    }


def run_cell(rnn: nn.RNNBase, x: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Run a unidirectional `rnn` on x (B, T, *) from `state` ({key: (B, L, H)})
    -> outputs (B, T, H) and the state after step T."""
    initial = tuple(state[key].transpose(0, 1).contiguous() for key in state_keys(rnn))  # (L, B, H)
    outputs, final = rnn(x, initial if len(initial) > 1 else initial[0])
    return outputs, final_state(rnn, final)
