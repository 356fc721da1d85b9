"""Which torch device a stage runs on."""

from __future__ import annotations

from astro3s.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str = "auto") -> str:
    """Return ``"cpu"`` or a CUDA device name for ``device``.

    Parameters
    ----------
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.

    Raises
    ------
    ConfigError
        A CUDA device is asked for but none is available, or ``device`` is not
        ``auto``, ``cpu`` or ``cuda[:i]``.
    """
    device = str(device)
    if device == "cpu":
        return device
    import torch  # only when a GPU might be used: keeps CPU-only callers light

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not a device astro3s runs on; use device=auto, cpu, cuda "
                          "or cuda:N.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} requested but no CUDA GPU is available; use device=auto.")
    return device
