"""The decoder's training objective (the decoder itself is imagelingo.inference.decoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    attention_total: torch.Tensor,
    alpha_c: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy): CE on the real next words plus the doubly stochastic attention
    penalty, which pushes every region to be attended about once over the caption."""
    ce = F.cross_entropy(scores, targets, label_smoothing=label_smoothing)
    return ce + alpha_c * ((1.0 - attention_total) ** 2).mean(), ce
