"""ASTRA's training loss: ``0.5·BCE + Dice(soma) + Dice(processes)``, and an optional clDice term.

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

A topology-aware term for the thin processes can be added (weight 0 by
default, so ASTRA's loss is unchanged): clDice (Shit et al., "clDice - a Novel
Topology-Preserving Loss Function for Tubular Structure Segmentation", CVPR
2021). A soft skeleton of the prediction and of the target is computed by
iterated min/max pooling; *topology precision* is the fraction of the
predicted skeleton inside the target, *topology sensitivity* the fraction of
the target's skeleton inside the prediction, and the loss is one minus their
harmonic mean. Unlike Dice, whose sum is dominated by the wide process bases
near the soma, it weighs a thin distal branch by its length.
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


def soft_skeleton(probabilities: torch.Tensor, *, iterations: int = 6) -> torch.Tensor:
    """Soft morphological skeleton of a probability map (clDice's ``soft-skeletonize``).

    ``skeleton = relu(p - open(p))`` accumulated over ``iterations`` soft
    erosions, where erosion is a 3x3 cross-shaped min pool and opening its
    erosion followed by a 3x3 max pool; a binary map gives its morphological
    skeleton up to ``iterations`` px from the border of a shape.

    Parameters
    ----------
    probabilities : Tensor
        ``(B, H, W)`` values in [0, 1].
    iterations : int
        Erosions; at least the half-width, in px, of the widest structure
        whose centre line should appear.

    Returns
    -------
    Tensor
        ``(B, H, W)`` in [0, 1], differentiable.
    """
    def erode(x: torch.Tensor) -> torch.Tensor:
        # a cross (4-neighbour) erosion: min over a 3x1 and a 1x3 window
        rows = -F.max_pool2d(-x, (3, 1), stride=1, padding=(1, 0))
        cols = -F.max_pool2d(-x, (1, 3), stride=1, padding=(0, 1))
        return torch.minimum(rows, cols)

    def dilate(x: torch.Tensor) -> torch.Tensor:
        # the 3x3 square, as two 1-D passes (CPU pooling is ~2x faster so)
        rows = F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
        return F.max_pool2d(rows, (1, 3), stride=1, padding=(0, 1))

    image = probabilities.unsqueeze(1)
    eroded = erode(image)
    skeleton = F.relu(image - dilate(eroded))  # the opening of step k is the dilation of step k+1's image
    for _ in range(iterations):  # a loop over erosion steps (a handful), not pixels
        image, eroded = eroded, erode(eroded)
        delta = F.relu(image - dilate(eroded))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton.squeeze(1)


def cldice_loss(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    iterations: int = 6,
    smooth: float = 1.0,
) -> torch.Tensor:
    """clDice loss of one class (Shit et al. 2021), per sample, averaged over the batch.

    Parameters
    ----------
    probabilities, target : Tensor
        ``(B, H, W)`` predicted probability and binary target of the class.
    valid : Tensor or None
        ``(B, H, W)`` 0/1 weights; pixels with 0 are left out.
    iterations : int
        Erosions of :func:`soft_skeleton`.
    smooth : float
        Added to each ratio's numerator and denominator, so that a sample with
        no structure in either map has loss 0.

    Returns
    -------
    Tensor
        Scalar ``mean_b [1 − 2 Tprec Tsens / (Tprec + Tsens)]`` with
        ``Tprec = (Σ S(p) y + s) / (Σ S(p) + s)``, ``Tsens = (Σ S(y) p + s) / (Σ S(y) + s)``.
    """
    if valid is not None:
        probabilities = probabilities * valid
        target = target * valid
    skel_pred = soft_skeleton(probabilities, iterations=iterations)
    skel_true = soft_skeleton(target, iterations=iterations)
    dims = tuple(range(1, probabilities.ndim))
    precision = ((skel_pred * target).sum(dims) + smooth) / (skel_pred.sum(dims) + smooth)
    sensitivity = ((skel_true * probabilities).sum(dims) + smooth) / (skel_true.sum(dims) + smooth)
    return (1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)).mean()


class AstraLoss(nn.Module):
    """``bce_weight·BCE + w_p·Dice(processes) + w_s·Dice(soma) [+ w_b·Dice(background)]
    [+ w_c·clDice(processes)]``.

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
    cldice_processes_weight : float
        Weight of :func:`cldice_loss` on the processes channel (ASTRA: 0, i.e. none).
    cldice_iterations : int
        Erosions of its soft skeleton (half the width, in px, of the widest processes).
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
        cldice_processes_weight: float = 0.0,
        cldice_iterations: int = 6,
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
        self.cldice_weight = float(cldice_processes_weight)
        self.cldice_iterations = int(cldice_iterations)
        if self.cldice_weight < 0 or (self.cldice_weight and self.cldice_iterations < 1):
            raise ValueError(f"cldice_processes_weight must be >= 0 (got {cldice_processes_weight}) and "
                             f"cldice_iterations >= 1 (got {cldice_iterations}); e.g. model.cldice_iterations=6")
        self.ignore_index = ignore_index

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms: ``{"loss", "bce", "dice_processes", "dice_soma", "dice_background"}``, and
        ``"cldice_processes"`` when its weight is not 0.

        ``loss`` is the weighted sum; Dice terms with weight 0 are still reported.
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
        if self.cldice_weight:  # its soft skeletons cost ~3 pooling passes per erosion: only when asked for
            terms["cldice_processes"] = cldice_loss(probabilities[:, PROCESSES], one_hot[:, PROCESSES],
                                                    valid=valid[:, 0], iterations=self.cldice_iterations)
            total = total + self.cldice_weight * terms["cldice_processes"]
        return {"loss": total, **terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, target)["loss"]
