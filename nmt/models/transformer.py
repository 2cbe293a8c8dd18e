"""The encoder-decoder Transformer (Vaswani et al. 2017), pre-norm or post-norm, with caches for decoding.

Decoding one token at a time reuses two kinds of keys and values:
- cross-attention keys/values of every decoder layer depend only on the source, so `encode`
  computes them once ("cross_k{i}", "cross_v{i}" in memory);
- self-attention keys/values of the tokens decoded so far grow by one position per step
  ("self_k{i}", "self_v{i}" in state, starting with length 0).

A decoding step (`decode_features`, which the search runs and the ONNX exporter traces) is
written for that one token: every row a 2-D (R, D) row, the self-attention's query, key and
value projections fused into one (D, 3D) matrix, reshapes to constant shapes, the source mask
turned into an additive bias once for all layers, and the memory taken once per sentence for
its consecutive hypotheses (`memory_per_sentence`, see `nmt.models.step`). Teacher forcing
(`forward`) runs the layers over whole sequences instead.

Letters: B batch (sentences), R rows decoded (R = B * G, G hypotheses per sentence), S source
length, T target length (t: tokens decoded so far), D d_model, N heads, Dh = D / N, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import TransformerConfig
from nmt.models.attention import padding_mask
from nmt.models.derived import Derived
from nmt.models.step import Seq2SeqModel, Slots, Tensors
from nmt.specials import PAD_ID


def sinusoids(max_positions: int, dim: int) -> Tensor:
    """The fixed position table (max_positions, D): sin on even features, cos on odd ones."""
    positions = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_positions, dim)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies)[:, : dim // 2]
    return table


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over N heads, with keys/values computed separately so callers can cache them."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.d_model, self.head_dim = d_model, d_model // heads
        self._qkv: Derived[tuple[Tensor, Tensor]] = Derived()  # see _fused_qkv
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, N, T, Dh)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, S, D) -> keys and values, each (B, N, S, Dh)."""
        return self._split(self.k(x)), self._split(self.v(x))

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """Queries from x (B, T, D) attend to keys/values (B, N, S, Dh) -> (B, T, D).

        mask: boolean, True = may attend, broadcastable to (B, N, T, S); None = attend everywhere."""
        dropout = self.dropout if self.training else 0.0
        queries = self._split(self.q(x))  # (B, N, T, Dh)
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, dropout_p=dropout)
        return self.out(out.transpose(1, 2).flatten(2))

    # -- one decoding step: rows (R, D), see the module docstring --------------------------------

    def _attend(
        self, queries: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """queries (B, N, G, Dh) against keys/values (B, N, S, Dh), additive bias (B, 1, 1, S) or
        None -> (B, N, G, Dh) and the attention weights (B, N, G, S), which it computes anyway.
        Plain matmuls: for a few queries they beat the fused kernel, which is built for long
        sequences."""
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, N, G, S)
        if bias is not None:
            scores = scores + bias
        weights = scores.softmax(dim=-1)
        return F.dropout(weights, self.dropout, self.training) @ values, weights

    def _fused_qkv(self) -> tuple[Tensor, Tensor]:
        """The query, key and value projections as one (3D, D) weight and (3D,) bias. Without
        gradients they are concatenated once and kept while the weights stay (`Derived`)."""
        linears = (self.q, self.k, self.v)

        def fused() -> tuple[Tensor, Tensor]:
            return torch.cat([m.weight for m in linears]), torch.cat([m.bias for m in linears])

        if torch.is_grad_enabled():
            return fused()
        return self._qkv.get([t for m in linears for t in (m.weight, m.bias)], fused)

    def step_self(self, h: Tensor, cache_k: Tensor, cache_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention of one new position per row: h (R, D), the rows' caches (R, N, t, Dh)
        -> (R, D) and the caches extended to (R, N, t + 1, Dh). Reshapes to constant shapes: an
        exported graph computes no shapes at each step."""
        qkv = F.linear(h, *self._fused_qkv())  # (R, 3D): one matrix product
        q, k, v = qkv.reshape(-1, 3, self.heads, 1, self.head_dim).unbind(1)  # (R, N, 1, Dh) each
        keys, values = torch.cat([cache_k, k], dim=2), torch.cat([cache_v, v], dim=2)
        context = self._attend(q, keys, values, None)[0]  # (R, N, 1, Dh)
        return self.out(context.reshape(-1, self.d_model)), keys, values

    def step_cross(
        self,
        h: Tensor,
        keys: Tensor,
        values: Tensor,
        bias: Tensor,
        need_weights: bool = False,
        slots: Slots | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Cross-attention of R = B * G rows, G consecutive ones per sentence: h (R, D) against
        the B sentences' keys/values (B, N, S, Dh), bias (B, 1, 1, S) -> (R, D), and with
        `need_weights` the attention weights averaged over the heads (R, S) (else None, and
        nothing more computed). With `slots`, h has only some of the B * G rows (R' of them):
        their queries are placed in the grid, zeros elsewhere, and only theirs come back (R', D)."""
        batch = keys.size(0)
        queries = self.q(h)  # (R, D), or (R', D)
        if slots is not None:  # the rows into their places, a zero row in the others
            queries = torch.cat([queries, queries.new_zeros(1, queries.size(1))]).index_select(0, slots.grid)
        queries = queries.reshape(batch, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, N, G, Dh)
        context, weights = self._attend(queries, keys, values, bias)  # (B, N, G, Dh), (B, N, G, S)
        context = context.transpose(1, 2).reshape(-1, self.d_model)  # (R, D)
        averaged = weights.mean(dim=1).reshape(-1, weights.size(-1)) if need_weights else None  # (R, S)
        if slots is not None:  # back to the rows given
            context = context.index_select(0, slots.rows)
            averaged = None if averaged is None else averaged.index_select(0, slots.rows)
        return self.out(context), averaged


class FeedForward(nn.Sequential):
    """Position-wise feed-forward block: Linear -> ReLU -> dropout -> Linear."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )


class _ResidualLayer(nn.Module):
    """Residual wrapping shared by both layer types.

    pre-norm:  x + dropout(f(norm(x)))       post-norm: norm(x + dropout(f(x)))"""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.dropout = nn.Dropout(cfg.dropout)

    def _input(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        return norm(x) if self.pre_norm else x

    def _residual(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        x = x + self.dropout(y)
        return x if self.pre_norm else norm(x)


class EncoderLayer(_ResidualLayer):
    """Self-attention, then feed-forward."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg)
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_norm = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_dim, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        """x (B, S, D), src_mask (B, 1, 1, S) -> (B, S, D)."""
        h = self._input(x, self.self_norm)
        x = self._residual(x, self.self_attn(h, *self.self_attn.keys_values(h), src_mask), self.self_norm)
        return self._residual(x, self.ff(self._input(x, self.ff_norm)), self.ff_norm)


class DecoderLayer(_ResidualLayer):
    """Causal self-attention (extending its key/value cache), cross-attention, then feed-forward."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg)
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_norm = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_dim, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self, x: Tensor, cross_k: Tensor, cross_v: Tensor, src_mask: Tensor, causal_mask: Tensor
    ) -> Tensor:
        """Teacher forcing: x (B, T, D); cross_k/cross_v (B, N, S, Dh); src_mask (B, 1, 1, S);
        causal_mask (T, T) -> x (B, T, D)."""
        h = self._input(x, self.self_norm)
        k, v = self.self_attn.keys_values(h)
        x = self._residual(x, self.self_attn(h, k, v, causal_mask), self.self_norm)
        h = self._input(x, self.cross_norm)
        x = self._residual(x, self.cross_attn(h, cross_k, cross_v, src_mask), self.cross_norm)
        return self._residual(x, self.ff(self._input(x, self.ff_norm)), self.ff_norm)

    def step(
        self,
        x: Tensor,
        self_k: Tensor,
        self_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        src_bias: Tensor,
        need_weights: bool = False,
        slots: Slots | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One decoding step of R = B * G rows: x (R, D); self_k/self_v (R, N, t, Dh);
        cross_k/cross_v (B, N, S, Dh); src_bias (B, 1, 1, S), 0 or -inf
        -> x (R, D), the self-attention cache extended to (R, N, t + 1, Dh), and with
        `need_weights` the cross-attention weights averaged over the heads (R, S) (else None).
        With `slots`, R' of the B * G rows only (see `Slots`)."""
        attended, self_k, self_v = self.self_attn.step_self(self._input(x, self.self_norm), self_k, self_v)
        x = self._residual(x, attended, self.self_norm)
        h = self._input(x, self.cross_norm)
        attended, weights = self.cross_attn.step_cross(h, cross_k, cross_v, src_bias, need_weights, slots)
        x = self._residual(x, attended, self.cross_norm)
        x = self._residual(x, self.ff(self._input(x, self.ff_norm)), self.ff_norm)
        return x, self_k, self_v, weights


class TransformerSeq2Seq(Seq2SeqModel):
    """Encoder-decoder Transformer with sinusoidal positions and tied target/output embeddings.

    `share_embeddings`: one matrix for source, target and output (needs one joint vocabulary);
    otherwise separate source and target embeddings, the target one still tied to the output.
    `pre_norm`: LayerNorm before each sublayer plus a final LayerNorm on each stack (more stable
    without warmup); otherwise the original post-norm.

    memory: {"src_mask" (B, S), "cross_k{i}", "cross_v{i}" (B, N, S, Dh) for each decoder layer i},
      one row per sentence (`memory_per_sentence`)
    state: {"self_k{i}", "self_v{i}" (R, N, t, Dh) for each decoder layer i; t = 0 after encode}
    The attention the step returns (`decode_step_with_attention`) is the cross-attention of decoder
    layer `alignment_layer` (the config's; the last by default), averaged over its heads.
    """

    memory_per_sentence = True
    takes_slots = True
    attends = True

    def __init__(self, cfg: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src {src_vocab_size} and tgt {tgt_vocab_size}"
            )
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.max_positions = cfg.max_positions
        self.alignment_layer = cfg.alignment_layer % cfg.decoder_layers
        self.scale = math.sqrt(cfg.d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        if cfg.share_embeddings:
            self.src_embed = self.tgt_embed
        else:
            self.src_embed = nn.Embedding(src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.positions: Tensor
        self.register_buffer("positions", sinusoids(cfg.max_positions, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers: list[DecoderLayer] = nn.ModuleList(  # type: ignore[assignment]
            DecoderLayer(cfg) for _ in range(cfg.decoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.output = nn.Linear(cfg.d_model, tgt_vocab_size, bias=False)
        self.output.weight = self.tgt_embed.weight
        self._reset_parameters(cfg.d_model)

    def _reset_parameters(self, d_model: int) -> None:
        """Xavier-uniform matrices; embeddings N(0, D^-1/2) so that, scaled by sqrt(D), they have unit
        variance like the positions; padding rows zero. LayerNorms and biases keep PyTorch's defaults."""
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for embedding in dict.fromkeys([self.tgt_embed, self.src_embed]):  # once each when shared
            nn.init.normal_(embedding.weight, std=d_model**-0.5)
            with torch.no_grad():
                embedding.weight[PAD_ID].zero_()

    def _embed(self, tokens: Tensor, embedding: nn.Embedding) -> Tensor:
        """tokens (B, T) at positions 0 .. T - 1 -> (B, T, D)."""
        return self.dropout(embedding(tokens) * self.scale + self.positions[: tokens.size(1)])

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """src (B, S), src_lengths (B,) -> (memory, state); see the class docstring for the keys."""
        if src.size(1) > self.max_positions:
            raise ValueError(f"source of {src.size(1)} tokens exceeds max_positions ({self.max_positions})")
        src_mask = padding_mask(src_lengths, src.size(1))  # (B, S)
        attn_mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(src, self.src_embed)
        for layer in self.encoder_layers:
            x = layer(x, attn_mask)
        x = self.encoder_norm(x)  # (B, S, D)
        memory, state = {"src_mask": src_mask}, {}
        for i, layer in enumerate(self.decoder_layers):
            k, v = layer.cross_attn.keys_values(x)  # (B, N, S, Dh)
            memory[f"cross_k{i}"], memory[f"cross_v{i}"] = k, v
            empty = k.new_zeros(k.size(0), k.size(1), 0, k.size(3))  # (B, N, 0, Dh)
            state[f"self_k{i}"], state[f"self_v{i}"] = empty, empty
        return memory, state

    @property
    def projection(self) -> nn.Linear:
        return self.output

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), src_lengths (B,), tgt_in (B, T) -> logits (B, T, V)."""
        if tgt_in.size(1) > self.max_positions:
            raise ValueError(
                f"target of {tgt_in.size(1)} tokens exceeds max_positions ({self.max_positions})"
            )
        memory, _ = self.encode(src, src_lengths)
        length = tgt_in.size(1)
        causal_mask = torch.ones(length, length, dtype=torch.bool, device=tgt_in.device).tril()  # (T, T)
        attn_mask = memory["src_mask"][:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(tgt_in, self.tgt_embed)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory[f"cross_k{i}"], memory[f"cross_v{i}"], attn_mask, causal_mask)
        return self.output(self.decoder_norm(x))

    def decode_features(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prev_tokens (R,) -> the output projection's inputs (R, D) and the state with one more
        cached position. The rows are G consecutive hypotheses of each of the memory's B
        sentences (R = B * G); the position of prev_tokens is the cache length. With `slots`,
        R' rows of that grid only, the state's and the results' too (see `Slots`)."""
        features, new_state, _ = self._step(prev_tokens, memory, state, need_weights=False, slots=slots)
        return features, new_state

    def decode_features_with_attention(
        self, prev_tokens: Tensor, memory: Tensors, state: Tensors, slots: Slots | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """As `decode_features`, with the alignment layer's cross-attention, heads averaged (R, S)."""
        features, new_state, attention = self._step(prev_tokens, memory, state, True, slots)
        assert attention is not None
        return features, new_state, attention

    def _step(
        self,
        prev_tokens: Tensor,
        memory: Tensors,
        state: Tensors,
        need_weights: bool,
        slots: Slots | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """`decode_features`, and with `need_weights` the alignment layer's cross-attention,
        heads averaged (R, S) (else None: no layer computes more than its output)."""
        step = state["self_k0"].shape[2]
        x = self.dropout(self.tgt_embed(prev_tokens) * self.scale + self.positions[step])  # (R, D)
        src_mask = memory["src_mask"]  # (B, S)
        bias = torch.zeros_like(src_mask, dtype=x.dtype).masked_fill(~src_mask, float("-inf"))
        bias = bias[:, None, None, :]  # (B, 1, 1, S), once for all layers
        new_state, attention = {}, None
        for i, layer in enumerate(self.decoder_layers):
            x, new_state[f"self_k{i}"], new_state[f"self_v{i}"], weights = layer.step(
                x,
                state[f"self_k{i}"],
                state[f"self_v{i}"],
                memory[f"cross_k{i}"],
                memory[f"cross_v{i}"],
                bias,
                need_weights and i == self.alignment_layer,
                slots,
            )
            if weights is not None:
                attention = weights
        return self.decoder_norm(x), new_state, attention
