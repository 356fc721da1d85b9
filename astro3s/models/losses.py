"""ASTRA's training loss: ``0.5·BCE + Dice(soma) + Dice(processes)``.

What ASTRA does (``train_mod.calc_loss``): its network ends in a softmax over
the three channels; the loss is ``torch.nn.BCELoss`` between those softmax
probabilities and the one-hot target, averaged over every pixel *and* every
channel (background included), times 0.5, plus a soft Dice loss on the
processes channel and one on the soma channel. The Dice loss of one channel is
``1 − (2·Σ p·y + s) / (Σ p + Σ y + s)`` summed over the pixels of each sample,
with smoothing ``s = 0.5``, then averaged over the batch.

Here the same terms are computed from logits: the BCE uses
``log p = log_softmax(z)`` and ``log(1 − p)`` from a log-sum-exp over the other
classes, which equals ``BCELoss(softmax(z), one_hot)`` without its clamp at
``log 0 = −100``. Targets are ``(B, H, W)`` int64 labels in
:data:`~astro3s.models.CLASS_NAMES` order; pixels equal to ``ignore_index``
count in no term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astro3s.models.classes import BACKGROUND, IGNORE_INDEX, NUM_CLASSES, PROCESSES, SOMA


def _valid_one_hot(
    target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot ``(B, C, H, W)`` float target and ``(B, 1, H, W)`` float validity mask."""
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")
    target = target.long()
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target))
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"target labels must lie in [0, {num_classes - 1}]"
            + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    one_hot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    return one_hot, valid.unsqueeze(1).to(torch.float32)


def softmax_binary_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int | None = IGNORE_INDEX
) -> torch.Tensor:
    """Mean binary cross-entropy between ``softmax(logits)`` and the one-hot target.

    Parameters
    ----------
    logits : Tensor
        ``(B, C, H, W)`` class logits.
    target : Tensor
        ``(B, H, W)`` integer labels in ``[0, C)`` or ``ignore_index``.
    ignore_index : int or None
        Label of pixels left out of the mean.

    Returns
    -------
    Tensor
        Scalar: the mean over valid pixels and all ``C`` channels of
        ``−[y log p + (1 − y) log(1 − p)]`` (``torch.nn.BCELoss`` on softmax
        probabilities, computed stably).
    """
    logits = logits.float()
    one_hot, valid = _valid_one_hot(target, logits.shape[1], ignore_index)
    log_p = F.log_softmax(logits, dim=1)
    log_total = torch.logsumexp(logits, dim=1, keepdim=True)
    eye = torch.eye(logits.shape[1], dtype=torch.bool, device=logits.device)
    # log Σ_{k≠c} exp z_k for every c: mask the diagonal of a (C, C) grid with -inf
    others = logits.unsqueeze(1).expand(-1, logits.shape[1], -1, -1, -1)
    others = others.masked_fill(eye[None, :, :, None, None], float("-inf"))
    log_not_p = torch.logsumexp(others, dim=2) - log_total
    per_element = -(one_hot * log_p + (1.0 - one_hot) * log_not_p)
    denominator = (valid.sum() * logits.shape[1]).clamp_min(1.0)
    return (per_element * valid).sum() / denominator


def soft_dice_loss(
    probabilities: torch.Tensor,
    target_one_hot: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    smooth: float = 0.5,
) -> torch.Tensor:
    """Soft Dice loss of one class, per sample, averaged over the batch.

    Parameters
    ----------
    probabilities, target_one_hot : Tensor
        ``(B, H, W)`` predicted probability and binary target of the class.
    valid : Tensor or None
        ``(B, H, W)`` 0/1 weights; pixels with 0 are left out.
    smooth : float
        Added to numerator and denominator (ASTRA: 0.5).

    Returns
    -------
    Tensor
        Scalar ``mean_b [1 − (2 Σ p y + s) / (Σ p + Σ y + s)]``.
    """
    if valid is not None:
        probabilities = probabilities * valid
        target_one_hot = target_one_hot * valid
    dims = tuple(range(1, probabilities.ndim))
    intersection = (probabilities * target_one_hot).sum(dims)
    total = probabilities.sum(dims) + target_one_hot.sum(dims)
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).mean()


class AstraLoss(nn.Module):
    """``bce_weight·BCE + w_p·Dice(processes) + w_s·Dice(soma) [+ w_b·Dice(background)]``.

    Parameters
    ----------
    bce_weight : float
        Weight of :func:`softmax_binary_cross_entropy` (ASTRA: 0.5).
    dice_processes_weight, dice_soma_weight : float
        Weights of the soft Dice losses of the two foreground classes (ASTRA: 1, 1).
    dice_background_weight : float
        Weight of a background Dice term (ASTRA: 0, i.e. none).
    smooth : float
        Dice smoothing (ASTRA: 0.5).
    ignore_index : int or None
        Target label of unannotated pixels (255).

    Notes
    -----
    ``forward(logits (B, 3, H, W), target (B, H, W) int64) -> scalar``;
    :meth:`terms` returns the weighted total and each unweighted term.
    """

    def __init__(
        self,
        *,
        bce_weight: float = 0.5,
        dice_processes_weight: float = 1.0,
        dice_soma_weight: float = 1.0,
        dice_background_weight: float = 0.0,
        smooth: float = 0.5,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice_weights = {
            "processes": float(dice_processes_weight),
            "soma": float(dice_soma_weight),
            "background": float(dice_background_weight),
        }
        self.smooth = float(smooth)
        self.ignore_index = ignore_index

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms: ``{"loss", "bce", "dice_processes", "dice_soma", "dice_background"}``.

        ``loss`` is the weighted sum; terms with weight 0 are still reported.
        """
        if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
            raise ValueError(f"logits must be (B, {NUM_CLASSES}, H, W), got {tuple(logits.shape)}")
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        logits = logits.float()
        one_hot, valid = _valid_one_hot(target, NUM_CLASSES, self.ignore_index)
        probabilities = torch.softmax(logits, dim=1)
        terms = {"bce": softmax_binary_cross_entropy(logits, target, ignore_index=self.ignore_index)}
        for name, channel in (("processes", PROCESSES), ("soma", SOMA), ("background", BACKGROUND)):
            terms[f"dice_{name}"] = soft_dice_loss(
                probabilities[:, channel], one_hot[:, channel], valid=valid[:, 0], smooth=self.smooth
            )
        total = self.bce_weight * terms["bce"]
        for name, weight in self.dice_weights.items():
            if weight:
                total = total + weight * terms[f"dice_{name}"]
        return {"loss": total, **terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, target)["loss"]
