"""Input normalisation, recorded in the manifest and applied by the worker: images are RGB in
[0, 1] and the archive takes (x - mean) / std per channel, or x * scale + shift."""
import torch

from .errors import ExportError


def _floats(flag, text, count):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(torch.isfinite(torch.tensor(values))):
        raise ExportError(f"{flag} {text!r}: give {count} comma-separated finite numbers")
    return values


def from_flags(mean, std, affine, default):
    """The normalisation the flags give, else `default` (what the source documents)."""
    if affine is not None and (mean is not None or std is not None):
        raise ExportError("give either --mean/--std or --affine, not both")
    if (mean is None) != (std is None):
        raise ExportError("--mean and --std go together: give both")
    if affine is not None:
        scale, shift = _floats("--affine", affine, 2)
        if scale == 0:
            raise ExportError("--affine: the scale must not be 0")
        return {"scale": scale, "shift": shift}
    if mean is not None:
        m, s = _floats("--mean", mean, 3), _floats("--std", std, 3)
        if min(s) <= 0:
            raise ExportError("--std: every value must be positive")
        return {"mean": m, "std": s}
    return default


def apply(norm: dict, x: torch.Tensor) -> torch.Tensor:
    """What the worker does to an image before calling the archive."""
    if "scale" in norm:
        return x * norm["scale"] + norm["shift"]
    mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def describe(norm: dict) -> str:
    if "scale" in norm:
        return f"x*{norm['scale']:g}{norm['shift']:+g}"
    fmt = lambda v: ",".join(f"{a:g}" for a in v)  # noqa: E731
    return f"mean {fmt(norm['mean'])} std {fmt(norm['std'])}"
