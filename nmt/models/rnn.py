"""Recurrent encoder-decoders: `RNNSeq2Seq` (no attention) and `AttentionRNNSeq2Seq`.

Both share the encoder (a multi-layer, optionally bidirectional recurrent network over packed
sequences), the bridge from the encoder's final states to the decoder's initial states, and the
output layer. The cell, LSTM, GRU or Elman RNN, is a parameter of both (`nmt.models.cells`): it
decides only which modules are built and which keys the state has, "h" and "c" for the LSTM,
"h" alone for the others.

Letters: B batch, S source length, T target length, E embedding size, H decoder hidden size,
K encoder output size (2H when bidirectional, else H), L layers, V target vocabulary.
Decoder states in `state` are batch first, (B, L, H), so the search can reorder them on dim 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import AttentionRNNConfig, RNNConfig
from nmt.models.attention import build_attention, padding_mask
from nmt.models.cells import TokenGates, build_cell, final_state, run_cell, state_keys, step_cell
from nmt.models.step import Seq2SeqModel, Slots, Tensors
from nmt.specials import PAD_ID


class RNNEncoder(nn.Module):
    """Embeds the source and runs a multi-layer, optionally bidirectional recurrent network over
    it, skipping padding."""

    def __init__(self, cfg: RNNConfig | AttentionRNNConfig, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = build_cell(
            cfg.cell, cfg.embed_dim, cfg.hidden_size, cfg.layers, cfg.dropout, cfg.bidirectional
        )
        self.output_size = cfg.hidden_size * (2 if cfg.bidirectional else 1)  # K
        self.register_load_state_dict_pre_hook(_rename_legacy_weights)

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """src (B, S), src_lengths (B,) -> outputs (B, S, K) (zeros at padding) and the final
        state {"h" (B, L, K), "c" (B, L, K) for the LSTM}."""
        embedded = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, final = self.rnn(packed)  # final: (L * directions, B, H), a pair for the LSTM
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=src.size(1))
        return outputs, final_state(self.rnn, final)


def _rename_legacy_weights(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """Weights saved before cells were a choice name the encoder's network "lstm"; today it is
    "rnn". The shipped bundles and old checkpoints load through this renaming."""
    for key in [key for key in state_dict if key.startswith(prefix + "lstm.")]:
        state_dict[prefix + "rnn." + key.removeprefix(prefix + "lstm.")] = state_dict.pop(key)


class Bridge(nn.Module):
    """Encoder final state -> decoder initial state, key by key ({key: (B, L, K)} -> {key: (B, L, H)}):
    h0 = tanh(W_h h), and for the LSTM c0 = W_c c.

    Layer l of the decoder starts from layer l of the encoder, through maps shared by all layers.
    No tanh on c: the cell state of an LSTM is not bounded to (-1, 1)."""

    def __init__(self, encoder_size: int, hidden_size: int, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.h = nn.Linear(encoder_size, hidden_size)
        self.c = nn.Linear(encoder_size, hidden_size) if "c" in keys else None

    def forward(self, final: dict[str, Tensor]) -> dict[str, Tensor]:
        state = {"h": torch.tanh(self.h(final["h"]))}
        if self.c is not None:
            state["c"] = self.c(final["c"])
        return state


class OutputLayer(nn.Module):
    """Decoder output (..., H) -> logits (..., V).

    With `tied` (the target embedding shared with the output matrix), a linear pre-output map first
    brings H to the embedding size E when they differ."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, tied: bool) -> None:
        super().__init__()
        vocab_size, embed_dim = embedding.weight.shape
        in_dim = embed_dim if tied else hidden_size
        self.pre_output = (
            nn.Linear(hidden_size, in_dim, bias=False) if in_dim != hidden_size else nn.Identity()
        )
        self.proj = nn.Linear(in_dim, vocab_size)
        if tied:
            self.proj.weight = embedding.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.pre_output(x))

    def features(self, x: Tensor) -> Tensor:
        """x (..., H) -> what `proj` takes (..., E)."""
        return self.pre_output(x)


def _init_uniform(model: nn.Module, embeddings: list[nn.Embedding]) -> None:
    """Every weight uniform in [-0.1, 0.1] (Sutskever et al. 2014), padding rows zero."""
    for param in model.parameters():
        nn.init.uniform_(param, -0.1, 0.1)
    with torch.no_grad():
        for embedding in embeddings:
            embedding.weight[PAD_ID].zero_()


def _decoder_cell(cfg: RNNConfig | AttentionRNNConfig, extra_input: int) -> nn.RNNBase:
    """The decoder's network: input = target embedding (E) + `extra_input` (context or input feeding)."""
    return build_cell(cfg.cell, cfg.embed_dim + extra_input, cfg.hidden_size, cfg.layers, cfg.dropout)


class RNNSeq2Seq(Seq2SeqModel):
    """Encoder-decoder without attention (Sutskever et al. 2014; Cho et al. 2014).

    The decoder sees the source only through its initial state, the bridged final encoder states.
    With `context_every_step` (Cho 2014), a fixed summary c of the source, the bridged final state
    of the top layer, is also concatenated to every decoder input and fed to a tanh pre-output layer
    together with the decoder output: o_t = tanh(W_o [h_t; c]).

    memory: {"src_mask" (B, S), and when context_every_step "context" (B, H) and its part of the
      decoder's first input product, "context_gates" (B, G H) (`TokenGates.extra_product`)}
    state: {"h" (B, L, H), "c" (B, L, H) with the LSTM cell}
    """

    def __init__(self, cfg: RNNConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.context_every_step = cfg.context_every_step
        self.encoder = RNNEncoder(cfg, src_vocab_size)
        self.bridge = Bridge(self.encoder.output_size, cfg.hidden_size, state_keys(self.encoder.rnn))
        self.tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.decoder = _decoder_cell(cfg, extra_input=cfg.hidden_size if cfg.context_every_step else 0)
        self.readout = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size) if cfg.context_every_step else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = OutputLayer(cfg.hidden_size, self.tgt_embed, cfg.tie_embeddings)
        self.token_gates = TokenGates()  # the decoder's first input product per token, for steps
        _init_uniform(self, [self.encoder.embed, self.tgt_embed])

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """src (B, S), src_lengths (B,) -> (memory, state); see the class docstring for the keys."""
        memory, state, _ = self.encode_for_export(src, src_lengths)
        return memory, state

    def encode_for_export(
        self, src: Tensor, src_lengths: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """`encode`, and the encoder outputs (B, S, K) it drops: tracing a packed 1-layer LSTM
        whose per-step outputs go unused fails (`vector::_M_range_check`), so the encoder graph
        returns them too, as "encoder_outputs", which nothing reads."""
        outputs, final = self.encoder(src, src_lengths)
        state = self.bridge(final)  # (B, L, H) each
        memory = {"src_mask": padding_mask(src_lengths, src.size(1))}
        if self.context_every_step:
            memory["context"] = state["h"][:, -1]  # (B, H)
            memory["context_gates"] = TokenGates.extra_product(
                self.decoder, self.tgt_embed.weight, memory["context"]
            )
        return memory, state, {"encoder_outputs": outputs}

    @property
    def projection(self) -> nn.Linear:
        return self.output.proj

    def _decode(self, tgt: Tensor, memory: Tensors, state: Tensors) -> tuple[Tensor, dict[str, Tensor]]:
        """tgt (B, T) -> the projection's inputs (B, T, E) and the state after the last step."""
        x = self.dropout(self.tgt_embed(tgt))  # (B, T, E)
        if self.readout is not None:  # Cho 2014: the source summary enters every step
            context = memory["context"].unsqueeze(1).expand(-1, tgt.size(1), -1)  # (B, T, H)
            x = torch.cat([x, context], dim=-1)
        outputs, state = run_cell(self.decoder, x, state)  # (B, T, H)
        if self.readout is not None:
            outputs = torch.tanh(self.readout(torch.cat([outputs, context], dim=-1)))
        return self.output.features(self.dropout(outputs)), state

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), src_lengths (B,), tgt_in (B, T) -> logits (B, T, V)."""
        memory, state = self.encode(src, src_lengths)
        return self.projection(self._decode(tgt_in, memory, state)[0])

    def decode_features(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prev_tokens (B,) -> the projection's inputs (B, E) and the new state."""
        if not TokenGates.usable(self.decoder, self.tgt_embed.weight):
            features, state = self._decode(prev_tokens.unsqueeze(1), memory, state)
            return features[:, 0], state
        gates = self.token_gates(self.decoder, self.tgt_embed.weight, prev_tokens)  # (B, G H)
        if self.readout is not None:  # the source summary's part, computed once when encoding
            gates = gates + memory["context_gates"]
        outputs, state = step_cell(self.decoder, gates, state)  # (B, H)
        if self.readout is not None:
            outputs = torch.tanh(self.readout(torch.cat([outputs, memory["context"]], dim=-1)))
        return self.output.features(outputs), state


class AttentionRNNSeq2Seq(Seq2SeqModel):
    """Encoder-decoder with attention, Luong et al. (2015)'s flow with input feeding.

    At step t, with a_{t-1} the previous attentional vector (zeros at the first step):
        x_t = [emb(y_{t-1}); a_{t-1}]              (just emb(y_{t-1}) without `input_feeding`)
        h_t = RNN(x_t, state)                      (the cell's top layer's output is the query)
        context_t = attention(h_t, encoder outputs)
        a_t = tanh(W_c [context_t; h_t])           -> output layer -> logits
    `attention` picks the score: "luong_dot", "luong_general", or "bahdanau", which is Bahdanau's
    additive score inside this same decoder (queried with h_t, not h_{t-1}), as Joey NMT and
    OpenNMT-py do. The source half of every score is precomputed in `encode` ("keys").

    memory: {"src_mask" (B, S), "encoder_outputs" (B, S, K), "keys" (B, S, *)}, once per sentence
      (`memory_per_sentence`): a step's R = B * G rows attend G at a time, each sentence's G
      consecutive rows in one product against its memory, never copied per beam
    state: {"h" (R, L, H), "c" (R, L, H) with the LSTM cell, "feed" (R, H) when input_feeding}
    The attention the step returns (`decode_step_with_attention`) is the scorer's weights.
    """

    attends = True
    memory_per_sentence = True
    takes_slots = True  # a step may compute some rows of its grid only (`Slots`)

    def __init__(self, cfg: AttentionRNNConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.input_feeding = cfg.input_feeding
        self.encoder = RNNEncoder(cfg, src_vocab_size)
        self.bridge = Bridge(self.encoder.output_size, cfg.hidden_size, state_keys(self.encoder.rnn))
        self.tgt_embed = nn.Embedding(tgt_vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.decoder = _decoder_cell(cfg, extra_input=cfg.hidden_size if cfg.input_feeding else 0)
        self.attention = build_attention(cfg.attention, cfg.hidden_size, self.encoder.output_size)
        self.combine = nn.Linear(self.encoder.output_size + cfg.hidden_size, cfg.hidden_size)  # W_c
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = OutputLayer(cfg.hidden_size, self.tgt_embed, cfg.tie_embeddings)
        self.token_gates = TokenGates()  # the decoder's first input product per token, for steps
        _init_uniform(self, [self.encoder.embed, self.tgt_embed])

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """src (B, S), src_lengths (B,) -> (memory, state); see the class docstring for the keys."""
        outputs, final = self.encoder(src, src_lengths)  # (B, S, K), (B, L, K) each
        state = self.bridge(final)  # (B, L, H) each
        memory = {
            "src_mask": padding_mask(src_lengths, src.size(1)),
            "encoder_outputs": outputs,
            "keys": self.attention.project_keys(outputs),
        }
        if self.input_feeding:
            h = state["h"]
            state["feed"] = h.new_zeros(h.size(0), h.size(2))  # (B, H)
        return memory, state

    def _step(
        self, embedded: Tensor, memory: Tensors, state: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One decoder step of R = B * G rows (G consecutive rows per sentence of the memory),
        or R' of them (`slots`): embedded (R, E) -> attentional vector a_t (R, H), the new state
        and the attention weights (R, S)."""
        x = torch.cat([embedded, state["feed"]], dim=-1) if self.input_feeding else embedded
        queries, new_state = run_cell(self.decoder, x.unsqueeze(1), state)  # (R, 1, H)
        return self._after_cell(queries[:, 0], new_state, memory, slots)

    def _after_cell(
        self, queries: Tensor, new_state: dict[str, Tensor], memory: Tensors, slots: Slots | None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The cell's outputs (R, H) and new state -> attentional vectors a_t (R, H), the state
        (with a_t as the next input feeding) and the attention weights (R, S)."""
        attentional, weights = self._attend_rows(queries, memory, slots)
        if self.input_feeding:
            new_state["feed"] = attentional
        return attentional, new_state, weights

    def _steps(self, x: Tensor, memory: Tensors, state: Tensors) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """Decoder inputs x (B, T, *) -> attentional vectors (B, T, H), the cell's state after step T
        and the attention weights (B, T, S)."""
        queries, new_state = run_cell(self.decoder, x, state)  # (B, T, H)
        attentional, weights = self._attend(queries, memory)
        return attentional, new_state, weights

    def _attend(self, queries: Tensor, memory: Tensors) -> tuple[Tensor, Tensor]:
        """Queries (B, T, H), T of each sentence of the memory -> attentional vectors (B, T, H)
        and the attention weights (B, T, S)."""
        context, weights = self.attention(
            queries, memory["keys"], memory["encoder_outputs"], memory["src_mask"]
        )
        return torch.tanh(self.combine(torch.cat([context, queries], dim=-1))), weights

    def _attend_rows(
        self, queries: Tensor, memory: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, Tensor]:
        """A step's queries (R, H), R = B * G rows, G consecutive rows per sentence of the
        memory, each sentence's G as one product -> attentional vectors (R, H) and the attention
        weights (R, S). With `slots`, R' of the B * G rows: their queries are placed in the
        grid, zeros elsewhere, and only theirs come back."""
        size = queries.size(1)
        if slots is not None:  # the rows into their places, a zero row in the others
            queries = torch.cat([queries, queries.new_zeros(1, size)]).index_select(0, slots.grid)
        grouped = queries.reshape(memory["keys"].size(0), -1, size)  # (B, G, H)
        attentional, weights = self._attend(grouped, memory)
        attentional, weights = attentional.reshape(-1, size), weights.flatten(0, 1)  # (B * G, ...)
        if slots is not None:  # back to the rows given
            attentional, weights = (
                attentional.index_select(0, slots.rows),
                weights.index_select(0, slots.rows),
            )
        return attentional, weights

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), src_lengths (B,), tgt_in (B, T) -> logits (B, T, V).

        Input feeding makes each step depend on the last, so the decoder loops over T; without it,
        the recurrent network and the attention each run once over all T steps."""
        memory, state = self.encode(src, src_lengths)
        embedded = self.dropout(self.tgt_embed(tgt_in))  # (B, T, E)
        if self.input_feeding:
            steps = []
            for t in range(tgt_in.size(1)):
                a_t, state, _ = self._step(embedded[:, t], memory, state)
                steps.append(a_t)
            attentional = torch.stack(steps, dim=1)
        else:
            attentional, _, _ = self._steps(embedded, memory, state)
        return self.output(self.dropout(attentional))  # (B, T, V)

    @property
    def projection(self) -> nn.Linear:
        return self.output.proj

    def decode_features(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prev_tokens (R,) -> the projection's inputs (R, E) and the new state; with `slots`,
        R' rows of the grid only, the state's and the results' too (see `Slots`)."""
        features, state, _ = self.decode_features_with_attention(prev_tokens, memory, state, slots)
        return features, state

    def decode_features_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """As `decode_features`, with the step's attention weights (R, S), which the step computes
        anyway."""
        if TokenGates.usable(self.decoder, self.tgt_embed.weight):
            feed = state["feed"] if self.input_feeding else None  # the previous attentional vector
            gates = self.token_gates(self.decoder, self.tgt_embed.weight, prev_tokens, feed)  # (R, G H)
            queries, new_state = step_cell(self.decoder, gates, state)  # (R, H)
            attentional, new_state, weights = self._after_cell(queries, new_state, memory, slots)
        else:
            embedded = self.dropout(self.tgt_embed(prev_tokens))
            attentional, new_state, weights = self._step(embedded, memory, state, slots)
        return self.output.features(self.dropout(attentional)), new_state, weights
