"""Random augmentations of image/mask batches, in torch (CPU or GPU).

ASTRA enlarges its training set offline with fixed transforms of every crop
(rotations by 90/180/270°, Gaussian blur σ = 6, Gaussian and salt-and-pepper
noise, zoom ×1.2 and ×0.7, four perspective warps, vertical and horizontal
flips, intensity ÷0.5 and ÷3, pincushion and barrel distortion, two elastic
deformations). Here the same families are drawn at random, per sample, each
with its probability in :class:`AugmentParams`, so they can run on the fly in a
data module or on the accelerator.

Geometric transforms act on image and mask through the *same* sampling grid
(one :func:`torch.nn.functional.grid_sample` per batch that composes elastic,
optical, rotation, scaling and perspective warps: bilinear for the image,
nearest for the mask); 90° rotations and flips are exact index permutations.
Intensity transforms (scaling, blur, noise) touch the image only. All random
numbers come from one :class:`torch.Generator` (on the CPU, whatever the data
device), so a seed fixes the result.

Shapes: image ``(B, C, H, W)`` float, mask ``(B, H, W)`` integer labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from astro3s.errors import ConfigError

_BACKGROUND_LABEL = 2  # astro3s.models.classes.BACKGROUND (not imported: keeps this module light)


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities (per sample) and magnitudes of each augmentation.

    Attributes
    ----------
    p_rot90 : float
        Rotate by a random multiple of 90° (only 180° when ``H != W``).
    p_flip_horizontal, p_flip_vertical : float
        Mirror left-right / top-bottom.
    p_rotate : float
        Rotate by an angle uniform in ``±max_rotation_deg``.
    p_scale : float
        Zoom by a factor log-uniform in ``scale_range`` (ASTRA: 0.7 and 1.2).
    p_perspective : float
        Perspective warp: each corner moves by up to ``perspective_strength`` of
        the image size (ASTRA: 0.2).
    p_optical : float
        Radial lens distortion with coefficient uniform in ``±optical_strength``
        (positive: barrel, negative: pincushion).
    p_elastic : float
        Elastic deformation: a smooth random displacement field with standard
        deviation ``elastic_alpha`` pixels and correlation length ``elastic_sigma``
        pixels.
    p_intensity : float
        Multiply intensities by a factor log-uniform in ``intensity_range``
        (ASTRA: ×2 and ×1/3).
    p_blur : float
        Gaussian blur with σ uniform in ``blur_sigma_range`` pixels (ASTRA: σ = 6).
    p_gaussian_noise : float
        Add Gaussian noise whose standard deviation is a fraction, uniform in
        ``gaussian_noise_range``, of the sample's own standard deviation.
    p_salt_pepper : float
        Set a fraction ``salt_pepper_amount`` of pixels to the sample's minimum
        (pepper) or 96th percentile (salt), half each (ASTRA: 4 %).
    padding_mode : str
        What warps bring in from outside the image: ``"zeros"`` (image 0, mask
        ``mask_fill``, as ASTRA), ``"border"`` or ``"reflection"``.
    mask_fill : int
        Mask label of pixels brought in from outside with ``padding_mode="zeros"``
        (2 = background; 255 = ignore them).
    """

    p_rot90: float = 0.5
    p_flip_horizontal: float = 0.5
    p_flip_vertical: float = 0.5
    p_rotate: float = 0.25
    max_rotation_deg: float = 180.0
    p_scale: float = 0.25
    scale_range: tuple[float, float] = (0.7, 1.2)
    p_perspective: float = 0.2
    perspective_strength: float = 0.2
    p_optical: float = 0.2
    optical_strength: float = 0.3
    p_elastic: float = 0.2
    elastic_alpha: float = 1.5
    elastic_sigma: float = 10.0
    p_intensity: float = 0.25
    intensity_range: tuple[float, float] = (1 / 3, 2.0)
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 6.0)
    p_gaussian_noise: float = 0.2
    gaussian_noise_range: tuple[float, float] = (0.05, 0.4)
    p_salt_pepper: float = 0.1
    salt_pepper_amount: float = 0.04
    padding_mode: str = "zeros"
    mask_fill: int = _BACKGROUND_LABEL

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.startswith("p_") and not (
                isinstance(value, int | float) and 0.0 <= value <= 1.0
            ):
                raise ConfigError(f"augmentation {item.name} must be a probability in [0, 1], got {value!r}")
        for name in ("scale_range", "intensity_range", "blur_sigma_range", "gaussian_noise_range"):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"augmentation {name} must be a pair (low, high), got {value!r}") from None
            if not 0 <= low <= high or (name in ("scale_range", "intensity_range") and low <= 0):
                raise ConfigError(f"augmentation {name} must satisfy 0 < low <= high, got {value!r}")
            object.__setattr__(self, name, (low, high))
        for name in ("elastic_sigma",):
            if not getattr(self, name) > 0:
                raise ConfigError(f"augmentation {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_rotation_deg", "perspective_strength", "optical_strength", "elastic_alpha"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"augmentation {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.salt_pepper_amount <= 1:
            raise ConfigError(f"salt_pepper_amount must lie in [0, 1], got {self.salt_pepper_amount!r}")
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise ConfigError(
                f"padding_mode must be 'zeros', 'border' or 'reflection', got {self.padding_mode!r}"
            )

    @classmethod
    def none(cls, **overrides: Any) -> AugmentParams:
        """Parameters with every probability 0 (identity), then ``overrides`` applied."""
        zeros = {item.name: 0.0 for item in fields(cls) if item.name.startswith("p_")}
        return cls(**{**zeros, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for configs and logs)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# -- random draws (CPU generator) -------------------------------------------------


def _uniform(generator: torch.Generator, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=generator, dtype=torch.float32)


def _chosen(generator: torch.Generator, batch: int, probability: float) -> torch.Tensor:
    """Boolean ``(B,)``: which samples get a transform (draws even when p is 0, to keep streams aligned)."""
    return torch.rand(batch, generator=generator, dtype=torch.float64) < probability


# -- Gaussian smoothing -------------------------------------------------------------


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, 2·radius+1)`` normalised 1-D Gaussian kernels for ``sigmas (N,)``."""
    offsets = torch.arange(-radius, radius + 1, dtype=sigmas.dtype, device=sigmas.device)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None].clamp_min(1e-6)) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``(N, C, H, W)`` with its own σ (``sigmas (N,)``, pixels); reflect borders."""
    n, c, h, w = images.shape
    radius = int(math.ceil(3 * float(sigmas.max())))
    radius = max(1, min(radius, h - 1, w - 1))
    kernels = _gaussian_kernels(sigmas.to(images.device, images.dtype), radius)
    kernels = kernels.repeat_interleave(c, dim=0)  # (N*C, K)
    flat = images.reshape(1, n * c, h, w)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


# -- geometric warps ----------------------------------------------------------------


def _homography_from_points(source: torch.Tensor, destination: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` homographies mapping ``source (N, 4, 2)`` points onto ``destination``."""
    n = source.shape[0]
    out_dtype = source.dtype
    source, destination = source.double(), destination.double()
    rows = []
    rhs = []
    for k in range(4):
        x, y = source[:, k, 0], source[:, k, 1]
        u, v = destination[:, k, 0], destination[:, k, 1]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows.append(torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=1))
        rows.append(torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=1))
        rhs.extend([u, v])
    system = torch.stack(rows, dim=1)  # (N, 8, 8)
    solution = torch.linalg.solve(system, torch.stack(rhs, dim=1))
    matrix = torch.cat([solution, torch.ones(n, 1, dtype=solution.dtype)], dim=1).reshape(n, 3, 3)
    return matrix.to(out_dtype)


def _sample_geometry(
    params: AugmentParams, generator: torch.Generator, batch: int, height: int, width: int
) -> dict[str, torch.Tensor]:
    """Draw every geometric parameter for a batch (CPU)."""
    draws: dict[str, torch.Tensor] = {}
    draws["rotate"] = _chosen(generator, batch, params.p_rotate)
    draws["angle"] = _uniform(generator, (batch,), -1, 1) * math.radians(params.max_rotation_deg)
    draws["scale"] = _chosen(generator, batch, params.p_scale)
    low, high = params.scale_range
    draws["zoom"] = torch.exp(_uniform(generator, (batch,), math.log(low), math.log(high)))
    draws["perspective"] = _chosen(generator, batch, params.p_perspective)
    draws["corner_shift"] = _uniform(generator, (batch, 4, 2), -1, 1) * params.perspective_strength
    draws["optical"] = _chosen(generator, batch, params.p_optical)
    draws["optical_k"] = _uniform(generator, (batch,), -1, 1) * params.optical_strength
    draws["elastic"] = _chosen(generator, batch, params.p_elastic)
    # control points about elastic_sigma pixels apart, interpolated smoothly in _warp_grids
    step = max(params.elastic_sigma, 1.0)
    coarse = (int(math.ceil(height / step)) + 1, int(math.ceil(width / step)) + 1)
    draws["elastic_noise"] = _uniform(generator, (batch, 2, *coarse), -1, 1)
    return draws


def _warp_grids(
    draws: dict[str, torch.Tensor], params: AugmentParams, height: int, width: int
) -> torch.Tensor:
    """``(N, H, W, 2)`` normalised sampling grids (x, y) for the selected samples (float32).

    Output pixel ``p`` (centred pixel units) samples the input at
    ``H(optical(p + elastic(p)))`` with ``H`` the rotation·zoom·perspective homography.
    """
    n = draws["angle"].shape[0]
    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y], dim=-1).expand(n, height, width, 2).clone()

    # elastic: smooth random displacement (bicubic interpolation of random control
    # points elastic_sigma pixels apart), std elastic_alpha pixels
    if bool(draws["elastic"].any()) and params.elastic_alpha > 0:
        field = F.interpolate(
            draws["elastic_noise"], size=(height, width), mode="bicubic", align_corners=True
        )
        field = field / field.flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None, None]
        field = field * params.elastic_alpha * draws["elastic"][:, None, None, None]
        points = points + field.permute(0, 2, 3, 1)

    # optical: radial distortion about the centre, radius normalised by the half-diagonal
    half_diagonal = 0.5 * math.hypot(height, width)
    k = torch.where(draws["optical"], draws["optical_k"], torch.zeros_like(draws["optical_k"]))
    radius2 = (points / half_diagonal).pow(2).sum(dim=-1, keepdim=True)
    points = points * (1 + k[:, None, None, None] * radius2).clamp_min(0.1)

    # homography: perspective (corner jitter) ∘ rotation ∘ zoom, output -> input
    half = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float32)
    corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float32) * half
    shift = draws["corner_shift"] * draws["perspective"][:, None, None] * torch.tensor(
        [width, height], dtype=torch.float32
    )
    perspective = _homography_from_points(corners.expand(n, 4, 2), corners + shift)
    angle = torch.where(draws["rotate"], draws["angle"], torch.zeros_like(draws["angle"]))
    zoom = torch.where(draws["scale"], draws["zoom"], torch.ones_like(draws["zoom"]))
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    affine = torch.zeros(n, 3, 3, dtype=torch.float32)
    affine[:, 0, 0], affine[:, 0, 1], affine[:, 1, 0], affine[:, 1, 1] = cos, -sin, sin, cos
    affine[:, 2, 2] = 1
    homography = perspective @ affine
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    mapped = torch.einsum("nij,nhwj->nhwi", homography, homogeneous)
    source = mapped[..., :2] / mapped[..., 2:].clamp_min(1e-6)
    # centred pixel units -> grid_sample's normalised coordinates (align_corners=False)
    return source * torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float32)


def _warp(
    image: torch.Tensor, mask: torch.Tensor | None, grid: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample image (bilinear) and mask (nearest) of the selected samples through ``grid``."""
    grid = grid.to(device=image.device, dtype=image.dtype if image.is_floating_point() else torch.float32)
    warped_image = F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode=params.padding_mode, align_corners=False
    )
    if mask is None:
        return warped_image, None
    # labels shifted by +1 so that 0 marks "outside" under zero padding
    labels = (mask.to(torch.float32) + 1.0)[:, None]
    warped = F.grid_sample(
        labels, grid.to(torch.float32), mode="nearest", padding_mode=params.padding_mode, align_corners=False
    )[:, 0]
    warped_mask = (warped.round() - 1).to(mask.dtype)
    if params.padding_mode == "zeros":
        warped_mask = torch.where(warped < 0.5, torch.full_like(warped_mask, params.mask_fill), warped_mask)
    return warped_image, warped_mask


# -- the augmentation pipeline ------------------------------------------------------------


def augment_batch(  # noqa: C901, PLR0915 - one branch per augmentation, in the published order
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    params: AugmentParams | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly augment a batch; geometric transforms move image and mask together.

    Parameters
    ----------
    image : Tensor
        ``(B, C, H, W)`` float images (any device).
    mask : Tensor or None
        ``(B, H, W)`` integer labels (e.g. 0 processes, 1 soma, 2 background,
        255 ignore), same device; None to augment images only.
    params : AugmentParams or None
        Probabilities and magnitudes (default :class:`AugmentParams()`).
    generator : torch.Generator or None
        CPU generator of every random draw (None: torch's global one).

    Returns
    -------
    (Tensor, Tensor or None)
        Augmented ``(B, C, H, W)`` image and ``(B, H, W)`` mask (same dtypes);
        the inputs are not modified.
    """
    params = params or AugmentParams()
    if image.ndim != 4:
        raise ValueError(f"image must be a batch (B, C, H, W), got shape {tuple(image.shape)}")
    batch, _, height, width = image.shape
    if mask is not None and mask.shape != (batch, height, width):
        raise ValueError(f"mask must be (B, H, W) = {(batch, height, width)}, got {tuple(mask.shape)}")
    if generator is None:
        generator = torch.default_generator
    image = image.clone()
    mask = None if mask is None else mask.clone()
    device = image.device

    # exact permutations: 90° rotations and flips
    rot90 = _chosen(generator, batch, params.p_rot90)
    turns = torch.randint(1, 4, (batch,), generator=generator)
    if height != width:
        turns = torch.full_like(turns, 2)
    flip_h = _chosen(generator, batch, params.p_flip_horizontal)
    flip_v = _chosen(generator, batch, params.p_flip_vertical)
    for index in range(batch):
        if rot90[index]:
            k = int(turns[index])
            image[index] = torch.rot90(image[index], k, dims=(-2, -1))
            if mask is not None:
                mask[index] = torch.rot90(mask[index], k, dims=(-2, -1))
        dims = [d for d, on in ((-1, flip_h[index]), (-2, flip_v[index])) if on]
        if dims:
            image[index] = torch.flip(image[index], dims=dims)
            if mask is not None:
                mask[index] = torch.flip(mask[index], dims=dims)

    # one resampling for all continuous warps
    draws = _sample_geometry(params, generator, batch, height, width)
    warped = draws["rotate"] | draws["scale"] | draws["perspective"] | draws["optical"] | draws["elastic"]
    if bool(warped.any()):
        selected = torch.nonzero(warped).flatten()
        sub_draws = {key: value[selected] for key, value in draws.items()}
        grid = _warp_grids(sub_draws, params, height, width)
        index = selected.to(device)
        new_image, new_mask = _warp(
            image[index], None if mask is None else mask[index], grid, params
        )
        image[index] = new_image
        if mask is not None and new_mask is not None:
            mask[index] = new_mask

    # intensity (image only)
    scale_on = _chosen(generator, batch, params.p_intensity)
    low, high = params.intensity_range
    factors = torch.exp(_uniform(generator, (batch,), math.log(low), math.log(high)))
    if bool(scale_on.any()):
        factors = torch.where(scale_on, factors, torch.ones_like(factors))
        image = image * factors.to(device, image.dtype)[:, None, None, None]

    blur_on = _chosen(generator, batch, params.p_blur)
    sigmas = _uniform(generator, (batch,), *params.blur_sigma_range)
    if bool(blur_on.any()) and params.blur_sigma_range[1] > 0:
        selected = torch.nonzero(blur_on).flatten()
        index = selected.to(device)
        image[index] = gaussian_blur(image[index], sigmas[selected].clamp_min(1e-3))

    noise_on = _chosen(generator, batch, params.p_gaussian_noise)
    noise_fraction = _uniform(generator, (batch,), *params.gaussian_noise_range)
    if bool(noise_on.any()):
        selected = torch.nonzero(noise_on).flatten()
        index = selected.to(device)
        noise = torch.randn((len(selected), *image.shape[1:]), generator=generator).to(device, image.dtype)
        spread = image[index].flatten(1).std(dim=1).clamp_min(1e-8)
        amplitude = noise_fraction[selected].to(device, image.dtype) * spread
        image[index] = image[index] + noise * amplitude[:, None, None, None]

    sp_on = _chosen(generator, batch, params.p_salt_pepper)
    if bool(sp_on.any()) and params.salt_pepper_amount > 0:
        selected = torch.nonzero(sp_on).flatten()
        index = selected.to(device)
        chosen = image[index]
        draw = torch.rand(chosen.shape, generator=generator).to(device)
        flat = chosen.flatten(1).float()
        salt = torch.quantile(flat, 0.96, dim=1).to(image.dtype)[:, None, None, None]
        pepper = flat.min(dim=1).values.to(image.dtype)[:, None, None, None]
        half = params.salt_pepper_amount / 2
        chosen = torch.where(draw < half, pepper.expand_as(chosen), chosen)
        chosen = torch.where(draw > 1 - half, salt.expand_as(chosen), chosen)
        image[index] = chosen
    return image, mask


class Augmenter:
    """Callable augmentation with its own seeded generator.

    Parameters
    ----------
    params : AugmentParams or mapping or None
        Probabilities and magnitudes (a mapping is passed to :class:`AugmentParams`).
    seed : int or None
        Seed of the generator (None: a random seed).

    Examples
    --------
    >>> augment = Augmenter(AugmentParams(p_blur=0.5), seed=0)   # doctest: +SKIP
    >>> image, mask = augment(image, mask)                       # doctest: +SKIP
    >>> batch = augment.batch({"image": image, "target": mask})  # doctest: +SKIP
    """

    def __init__(
        self, params: AugmentParams | Mapping[str, Any] | None = None, *, seed: int | None = None
    ) -> None:
        if isinstance(params, Mapping):
            params = AugmentParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        self.params = params or AugmentParams()
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return augment_batch(image, mask, self.params, generator=self.generator)

    def batch(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Augment a ``{"image": (B,C,H,W), "target": (B,H,W), ...}`` dict (other keys kept)."""
        image, target = self(batch["image"], batch.get("target"))
        out = dict(batch)
        out["image"] = image
        if target is not None:
            out["target"] = target
        return out


# -- figure --------------------------------------------------------------------------------


def _as_pair(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        return batch["image"], batch.get("target", batch.get("mask"))
    if isinstance(batch, list | tuple):
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None


def plot_augmentations(
    batch_before: Any, batch_after: Any, *, path: str | Path, max_items: int = 8
) -> Path:
    """Save a figure of a batch before and after augmentation.

    Parameters
    ----------
    batch_before, batch_after : dict or tuple or Tensor
        ``{"image": (B, C, H, W), "target": (B, H, W)}`` dicts, ``(image, mask)``
        tuples, or image tensors.
    path : str or Path
        Output file (format from the suffix, e.g. ``.png``); parents are created.
    max_items : int
        Columns (samples) shown.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    image_before, mask_before = _as_pair(batch_before)
    image_after, mask_after = _as_pair(batch_after)
    n_items = min(int(max_items), image_before.shape[0], image_after.shape[0])
    rows = [("image before", image_before, False), ("image after", image_after, False)]
    if mask_before is not None:
        rows.insert(1, ("mask before", mask_before, True))
    if mask_after is not None:
        rows.append(("mask after", mask_after, True))
    # processes green, soma magenta, background black, anything else (ignore) blue
    label_cmap = ListedColormap(["#22dd22", "#ff33cc", "#000000", "#3366ff"])
    label_norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 256], label_cmap.N)
    figure = Figure(figsize=(1.6 * n_items + 1, 1.6 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), n_items, squeeze=False)
    for r, (title, data, is_mask) in enumerate(rows):
        for c in range(n_items):
            ax = axes[r][c]
            tile = data[c].detach().float().cpu()
            if is_mask:
                ax.imshow(tile.numpy(), cmap=label_cmap, norm=label_norm, interpolation="nearest")
            else:
                ax.imshow(tile[0].numpy(), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


__all__ = ["AugmentParams", "Augmenter", "augment_batch", "gaussian_blur", "plot_augmentations"]
