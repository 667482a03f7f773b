"""Segmentation losses compared in the paper: BCE, Dice, and 0.3 * BCE + 0.7 * Dice.

All take logits and binary targets of the same shape. BCE clamps probabilities to
[eps, 1 - eps] (smoothing epsilon 1e-5, as in the method notes); Dice is the batch-level soft Dice
``1 - (2 * sum(s * r) + eps) / (sum(s) + sum(r) + eps)``.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
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


LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
}
