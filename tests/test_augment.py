"""Augmentations: image/mask alignment, determinism, identity at p = 0, figure."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from astro3s.data.augment import AugmentParams, Augmenter, augment_batch, plot_augmentations
from astro3s.errors import ConfigError

GEOMETRIC = [
    "p_rot90",
    "p_flip_horizontal",
    "p_flip_vertical",
    "p_rotate",
    "p_scale",
    "p_perspective",
    "p_optical",
    "p_elastic",
]
INTENSITY = ["p_intensity", "p_blur", "p_gaussian_noise", "p_salt_pepper"]
K = 10.0


def labelled_batch(n: int = 6, *, height: int = 96, width: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks with a soma disc and process lines; images equal to ``K × label``."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(
        torch.arange(height).float(), torch.arange(width).float(), indexing="ij"
    )
    mask = torch.full((n, height, width), 2, dtype=torch.long)
    for i in range(n):
        cy = height / 2 + (torch.rand(1, generator=g).item() - 0.5) * height / 4
        cx = width / 2 + (torch.rand(1, generator=g).item() - 0.5) * width / 4
        for k in range(3):
            angle = 2 * math.pi * (k / 3 + 0.1 * torch.rand(1, generator=g).item())
            along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
            across = ((xx - cx) * math.sin(angle) - (yy - cy) * math.cos(angle)).abs()
            mask[i][(across <= 2) & (along > 0) & (along < 35)] = 0
        mask[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= 100] = 1
    return (K * mask.float())[:, None], mask


@pytest.mark.parametrize("transform", GEOMETRIC)
@pytest.mark.parametrize("size", [(96, 96), (80, 112)])
def test_geometric_transforms_keep_image_and_mask_aligned(
    transform: str, size: tuple[int, int]
) -> None:
    image, mask = labelled_batch(height=size[0], width=size[1])
    params = AugmentParams.none(**{transform: 1.0}, mask_fill=255)
    new_image, new_mask = augment_batch(
        image, mask, params, generator=torch.Generator().manual_seed(3)
    )
    assert new_image.shape == image.shape and new_mask.shape == mask.shape
    assert new_mask.dtype == mask.dtype
    inside = new_mask != 255
    assert inside.float().mean() > 0.6
    labels_from_image = (new_image[:, 0] / K).round().long()
    agreement = (labels_from_image == new_mask)[inside].float().mean().item()
    assert agreement >= 0.95, (transform, agreement)
    assert not torch.equal(new_mask, mask), "the transform did nothing"
    # the mask keeps only the labels it had (nearest sampling)
    assert set(new_mask.unique().tolist()) <= {0, 1, 2, 255}


def test_exact_transforms_are_permutations() -> None:
    image, mask = labelled_batch()
    params = AugmentParams.none(p_rot90=1.0, p_flip_horizontal=0.5, p_flip_vertical=0.5)
    new_image, new_mask = augment_batch(image, mask, params, generator=torch.Generator().manual_seed(0))
    assert torch.equal((new_image[:, 0] / K).long(), new_mask)
    for i in range(len(mask)):
        assert torch.equal(new_mask[i].flatten().sort().values, mask[i].flatten().sort().values)


def test_zero_fill_marks_background() -> None:
    image, mask = labelled_batch()
    params = AugmentParams.none(p_scale=1.0, scale_range=(0.6, 0.6))
    _, new_mask = augment_batch(image, mask, params, generator=torch.Generator().manual_seed(0))
    assert (new_mask[:, 0, :] == 2).all()  # zoomed out: the border comes from outside
    assert not (new_mask == 255).any()


@pytest.mark.parametrize("transform", INTENSITY)
def test_intensity_transforms_touch_the_image_only(transform: str) -> None:
    image, mask = labelled_batch()
    params = AugmentParams.none(**{transform: 1.0})
    new_image, new_mask = augment_batch(image, mask, params, generator=torch.Generator().manual_seed(0))
    assert torch.equal(new_mask, mask)
    assert not torch.equal(new_image, image)
    assert torch.isfinite(new_image).all()


def test_blur_reaches_sigma_six() -> None:
    image = torch.zeros(1, 1, 96, 96)
    image[0, 0, 48, 48] = 1.0
    params = AugmentParams.none(p_blur=1.0, blur_sigma_range=(6.0, 6.0))
    blurred, _ = augment_batch(image, None, params, generator=torch.Generator().manual_seed(0))
    row = blurred[0, 0, 48]
    variance = float((row / row.sum() * (torch.arange(96) - 48.0) ** 2).sum())
    assert variance == pytest.approx(36.0, rel=0.05)


def test_seeded_augmentation_is_deterministic() -> None:
    image, mask = labelled_batch()
    everything = AugmentParams(**{name: 0.7 for name in GEOMETRIC + INTENSITY})
    first = Augmenter(everything, seed=11)(image, mask)
    second = Augmenter(everything, seed=11)(image, mask)
    third = Augmenter(everything, seed=12)(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], third[0])


def test_zero_probabilities_are_the_identity() -> None:
    image, mask = labelled_batch()
    new_image, new_mask = augment_batch(image, mask, AugmentParams.none())
    assert torch.equal(new_image, image) and torch.equal(new_mask, mask)


def test_inputs_are_not_modified_and_dict_batches_work() -> None:
    image, mask = labelled_batch(2)
    image_copy, mask_copy = image.clone(), mask.clone()
    batch = Augmenter(AugmentParams(p_rot90=1.0, p_rotate=1.0), seed=0).batch(
        {"image": image, "target": mask, "name": ["a", "b"]}
    )
    assert torch.equal(image, image_copy) and torch.equal(mask, mask_copy)
    assert batch["name"] == ["a", "b"] and batch["image"].shape == image.shape


def test_bad_parameters_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="p_blur"):
        AugmentParams(p_blur=1.5)
    with pytest.raises(ConfigError, match="scale_range"):
        AugmentParams(scale_range=(1.2, 0.7))
    with pytest.raises(ConfigError, match="padding_mode"):
        AugmentParams(padding_mode="wrap")


def test_augmenter_accepts_a_plain_mapping() -> None:
    augment = Augmenter({"p_flip_horizontal": 1.0, "scale_range": [0.8, 1.1]}, seed=0)
    assert augment.params.scale_range == (0.8, 1.1)


def test_plot_augmentations_writes_a_figure(tmp_path: Path) -> None:
    image, mask = labelled_batch(4)
    after = Augmenter(AugmentParams(), seed=0)(image, mask)
    path = plot_augmentations(
        {"image": image, "target": mask}, after, path=tmp_path / "figs" / "augment.png"
    )
    assert path.exists() and path.stat().st_size > 1000
