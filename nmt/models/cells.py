"""The recurrent cells behind `cell: lstm | gru | rnn`, with their state as a dict of batch-first tensors.

`nn.LSTM`, `nn.GRU` and `nn.RNN` (Elman's, tanh) take the same arguments and give the same outputs;
they differ only in the state they carry: the LSTM (h, c), the GRU and the Elman RNN h alone. The
functions here hide that difference from the models: a state is {"h": ..., "c": ...} for the LSTM
and {"h": ...} for the other two, every tensor batch first, (B, L, D * H), so a search reorders it
on dim 0 and an exporter sees one graph input per key. PyTorch's modules want (L * D, B, H) and a
tuple for the LSTM, hence the conversions in `run_cell` and `final_state`.

A decoding step may instead take its first layer's input product from a table of every target
token's (`TokenGates`) and run the cell written out (`step_cell`): the same numbers, fewer
products on the CPU.

Letters: B batch, T steps, L layers, D directions (1 or 2), H hidden size, G gates (4 LSTM, 3 GRU,
1 Elman RNN), V target vocabulary, E embedding size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

from nmt.models.derived import Derived

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


# the table of `TokenGates` is used while it takes no more memory than this (the shipped bundles'
# 8,000 tokens x 4 x 256 LSTM gates: 33 MB); a larger one falls back to the product at every step
TOKEN_GATES_LIMIT = 64 * 2**20


class TokenGates:
    """A decoder network's first-layer input product for every target token.

    A decoder step's input is x = [emb(y); extra] (extra: input feeding or a source summary, or
    nothing), so its first layer's input product W_ih0 x + b_ih0 = table[y] + W_ih0[:, E:] extra,
    where table = emb W_ih0[:, :E]^T + b_ih0 (V, G H) depends on the weights alone (G = 4 gates
    for the LSTM, 3 for the GRU, 1 for the Elman RNN). A step then gathers R rows of it instead
    of multiplying (R, E) by (E, G H): half the LSTM step's products when the input is as wide as
    the hidden state. The table is made once while the weights stay (`Derived`); an exported
    graph holds it as a constant."""

    def __init__(self) -> None:
        self._table: Derived[Tensor] = Derived()

    @staticmethod
    def usable(rnn: nn.RNNBase, embedding: Tensor) -> bool:
        """Whether a step of `rnn` takes its input product from the table of `embedding` (V, E):
        when decoding (eval mode, no gradients), on the CPU (a GPU runs PyTorch's fused step
        faster than a gather and the cell's element-wise kernels), and while the table stays
        under TOKEN_GATES_LIMIT."""
        size = embedding.size(0) * _weight(rnn, "weight_ih", 0).size(0) * embedding.element_size()
        decoding = not rnn.training and not torch.is_grad_enabled()
        written_out = not isinstance(rnn, nn.RNN) or rnn.nonlinearity == "tanh"  # `step_cell`'s cells
        return decoding and written_out and embedding.device.type == "cpu" and size <= TOKEN_GATES_LIMIT

    def __call__(
        self, rnn: nn.RNNBase, embedding: Tensor, tokens: Tensor, extra: Tensor | None = None
    ) -> Tensor:
        """tokens (R,) and what follows their embeddings in the input, extra (R, X) or None ->
        the first layer's input product W_ih0 [emb(tokens); extra] + b_ih0 (R, G H), for `rnn`
        and `embedding` (V, E)."""
        weight, bias = _weight(rnn, "weight_ih", 0), _weight(rnn, "bias_ih", 0)
        width = embedding.size(1)
        table = self._table.get(
            [embedding, weight, bias], lambda: functional.linear(embedding, weight[:, :width], bias)
        )  # (V, G H)
        gates = table.index_select(0, tokens)
        return gates if extra is None else gates + self.extra_product(rnn, embedding, extra)

    @staticmethod
    def extra_product(rnn: nn.RNNBase, embedding: Tensor, extra: Tensor) -> Tensor:
        """What follows the embeddings in the input, extra (R, X) -> its part of the first
        layer's input product, W_ih0[:, E:] extra (R, G H): for an extra fixed per sentence (a
        source summary), computed once when encoding."""
        return functional.linear(extra, _weight(rnn, "weight_ih", 0)[:, embedding.size(1) :])


def step_cell(
    rnn: nn.RNNBase, gates: Tensor, state: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step of a unidirectional `rnn` (eval mode: no dropout between layers) given its first
    layer's input product, gates (B, G H) = W_ih0 x + b_ih0 (see `TokenGates`), from `state`
    ({key: (B, L, H)}) -> output (B, H) and the new state. The same as `run_cell` on one step,
    written out so that the first product can come from a table."""
    h, c = state["h"], state.get("c")
    new_h, new_c = [], []
    output = h[:, 0]
    for layer in range(rnn.num_layers):
        if layer:
            gates = functional.linear(
                output, _weight(rnn, "weight_ih", layer), _weight(rnn, "bias_ih", layer)
            )
        hidden = functional.linear(
            h[:, layer], _weight(rnn, "weight_hh", layer), _weight(rnn, "bias_hh", layer)
        )
        if isinstance(rnn, nn.LSTM):
            assert c is not None
            i, f, g, o = (gates + hidden).chunk(4, dim=1)
            cell = torch.sigmoid(f) * c[:, layer] + torch.sigmoid(i) * torch.tanh(g)
            output = torch.sigmoid(o) * torch.tanh(cell)
            new_c.append(cell)
        elif isinstance(rnn, nn.GRU):
            (r_x, z_x, n_x), (r_h, z_h, n_h) = gates.chunk(3, dim=1), hidden.chunk(3, dim=1)
            reset, update = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
            candidate = torch.tanh(n_x + reset * n_h)
            output = candidate + update * (h[:, layer] - candidate)  # (1 - z) n + z h
        else:
            output = torch.tanh(gates + hidden)
        new_h.append(output)
    new_state = {"h": torch.stack(new_h, dim=1)}
    if new_c:
        new_state["c"] = torch.stack(new_c, dim=1)
    return output, new_state


def _weight(rnn: nn.RNNBase, name: str, layer: int) -> Tensor:
    return getattr(rnn, f"{name}_l{layer}")
