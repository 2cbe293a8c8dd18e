"""`decode_step` from two parts every model has: the decoder's features and the output projection.

    decode_features(prev_tokens (B,), memory, state) -> (features (B, E), new_state)
    projection: nn.Linear, E -> V (the target embedding when tied)
    decode_step = log_softmax(projection(features)), in float32

Exporters use the parts: the ONNX decoder graph ranks the projection's outputs without
materialising the log-probabilities (see `nmt.export.onnx_head`).
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectedStep:
    """Mixin giving a model with `decode_features` and `projection` its `decode_step`."""

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
