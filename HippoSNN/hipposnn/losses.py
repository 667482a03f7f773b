"""Segmentation losses compared in the paper: BCE, Dice, and 0.3 * BCE + 0.7 * Dice; and the distillation term.

The three losses take logits and binary targets of the same shape. BCE clamps probabilities to
[eps, 1 - eps] (smoothing epsilon 1e-5, as in the method notes); Dice is the batch-level soft Dice
``1 - (2 * sum(s * r) + eps) / (sum(s) + sum(r) + eps)``.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5


def bce_loss(logits: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    p = torch.sigmoid(logits).clamp(eps, 1.0 - eps)
    return -(target * torch.log(p) + (1.0 - target) * torch.log(1.0 - p)).mean()


def dice_loss(logits: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + target.sum() + eps)


def bce_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    return 0.3 * bce_loss(logits, target) + 0.7 * dice_loss(logits, target)


def distill_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean per-pixel KL divergence from the teacher's foreground probability to the student's.

    Fine-tuning a converted SNN on the labels alone lets it drift from the ANN it came from; this
    term pulls every pixel towards the ANN's own (soft) answer, which is the best the converted
    net can hope to copy. It is BCE against the teacher's probabilities minus their entropy, so it
    is zero when the two agree and its gradient is that of the soft-target BCE.
    """
    q = torch.sigmoid(teacher_logits.detach())
    entropy = F.binary_cross_entropy(q, q, reduction="mean")
    return F.binary_cross_entropy_with_logits(logits, q) - entropy


LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
}
