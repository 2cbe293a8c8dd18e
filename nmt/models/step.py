"""`decode_step` from two parts every model has: the decoder's features and the output projection.

    decode_features(prev_tokens (B,), memory, state) -> (features (B, E), new_state)
    projection: nn.Linear, E -> V (the target embedding when tied)
    decode_step = log_softmax(projection(features)), in float32

A model with attention (`attends`) also offers the step with its attention over the source:

    decode_features_with_attention(prev_tokens, memory, state) -> (features, new_state, attention (B, S))
    decode_step_with_attention = decode_step and that attention

The weights of each row sum to 1 over its real source tokens (EOS included) and are 0 at padding.
`decode_step` never computes more than it returns: the attention is a separate call, so asking for
none costs nothing.

Exporters use the parts: the ONNX decoder graph ranks the projection's outputs without
materialising the log-probabilities (see `nmt.export.onnx_head`).
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectedStep:
    """Mixin giving a model with `decode_features` and `projection` its `decode_step` (and, with
    `decode_features_with_attention`, its `decode_step_with_attention`)."""

    attends: bool = False  # whether the model has attention over the source to return

    @property
    def projection(self) -> nn.Linear:
        raise NotImplementedError

    def decode_features(
        self, prev_tokens: Tensor, memory: dict[str, Tensor], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def decode_step(
        self, prev_tokens: Tensor, memory: dict[str, Tensor], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """prev_tokens (B,) -> log-probabilities (B, V) float32 and the new state."""
        features, state = self.decode_features(prev_tokens, memory, state)
        return self.projection(features).float().log_softmax(dim=-1), state

    def decode_features_with_attention(
        self, prev_tokens: Tensor, memory: dict[str, Tensor], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no attention")

    def decode_step_with_attention(
        self, prev_tokens: Tensor, memory: dict[str, Tensor], state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """prev_tokens (B,) -> log-probabilities (B, V) float32, the new state and the step's
        attention over the source (B, S)."""
        features, state, attention = self.decode_features_with_attention(prev_tokens, memory, state)
        return self.projection(features).float().log_softmax(dim=-1), state, attention
