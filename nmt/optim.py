"""Loss, optimizer and learning-rate schedule of a training run.

- label-smoothed cross entropy over non-pad target tokens (Szegedy et al. 2016);
- Adam or AdamW;
- `inverse_sqrt`: linear warm-up then lr * sqrt(warmup / step) (Vaswani et al. 2017), stepped
  every optimizer step; `plateau`: multiply the lr by `plateau_factor` when validation BLEU
  has not improved for `plateau_patience` epochs (the usual LSTM recipe), stepped per epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.config import TrainConfig
from nmt.specials import PAD_ID


def label_smoothed_loss(logits: Tensor, target: Tensor, smoothing: float) -> Tensor:
    """Summed loss over real tokens. logits (B, T, V), target (B, T) with PAD ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        target.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=smoothing,
        reduction="sum",
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def inverse_sqrt(warmup: int):
    """lr factor for optimizer step `step` (0-based): warm-up, then 1/sqrt decay; 1 without warm-up."""

    def factor(step: int) -> float:
        if warmup == 0:
            return 1.0
        step += 1
        return min(step / warmup, math.sqrt(warmup / step))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "inverse_sqrt":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt(cfg.warmup_steps))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )
