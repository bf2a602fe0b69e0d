"""The saved archive, loaded back, against eager PyTorch: every method at batch 1 and 3 equals
the original module's output (1e-4 relative: max abs difference / max abs of the reference) at
every size the manifest claims to have checked, and gradients reach the input.

Which sizes are claimed (`input_sizes.min` / `max`):
- scripted graphs keep the network's own shape logic, so the network's range is the archive's:
  the smallest of 32, 64, 128, default/2 px and the largest of 2x, 1.5x default px that check,
  plus an odd size between each end and the default (a network that only runs at multiples of
  its stride fails there, and then only the default is claimed on that side);
- traced graphs froze their shape arithmetic at the default size, so only the default is
  claimed, unless --min-size/--max-size ask for more: then every size in between is checked;
- --min-size/--max-size are checked as given and a failure is an error."""
import time

import torch

from . import normalization
from .eager import reference_maps
from .errors import ExportError

TOLERANCE = 1e-4
BATCHES = (1, 3)
INPUT_SEED = 1234


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.double() - want.double()).abs().max().item()
    scale = want.double().abs().max().item()
    if diff == 0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def pixels(size: int, batch: int, seed: int = INPUT_SEED) -> torch.Tensor:
    """A reproducible image batch in [0, 1], as the worker would feed."""
    g = torch.Generator().manual_seed(seed + size)
    return torch.rand(batch, 3, size, size, generator=g)


class Checker:
    def __init__(self, model, traced, layers, norm, archive):
        self.model, self.traced, self.layers = model, traced, layers
        self.norm, self.archive = norm, archive
        self.errors = {l.name: 0.0 for l in layers}  # worst relative error seen per layer
        self.checked = []  # sizes that passed

    def methods(self):
        return [getattr(self.archive, f"layer_{i}") for i in range(len(self.layers))]

    def check(self, size: int):
        """None if every method equals eager PyTorch at `size`, else why not."""
        x = normalization.apply(self.norm, pixels(size, max(BATCHES)))
        try:
            refs = reference_maps(self.model, self.traced, self.layers, x)
        except ExportError as e:
            return str(e)
        found = {}
        for layer, method in zip(self.layers, self.methods()):
            for b in BATCHES:
                try:
                    with torch.no_grad():
                        got = method(x[:b])
                except Exception as e:
                    line = str(e).strip().splitlines()
                    return f"layer {layer.name} fails at batch {b}: {line[-1] if line else e}"
                want = refs[layer.name][:b]
                if got.shape != want.shape:
                    return (f"layer {layer.name} at batch {b}: archive shape {list(got.shape)}, "
                            f"eager {list(want.shape)}")
                err = relative_error(got, want)
                if not err <= TOLERANCE:
                    return f"layer {layer.name} at batch {b}: relative error {err:.1e}"
                found[layer.name] = max(found.get(layer.name, 0.0), err)
        for name, err in found.items():
            self.errors[name] = max(self.errors[name], err)
        self.checked.append(size)
        return None

    def gradients(self, size: int) -> None:
        """Backpropagation to the image through every method (what synthesis does)."""
        for layer, method in zip(self.layers, self.methods()):
            x = normalization.apply(self.norm, pixels(size, 1)).requires_grad_(True)
            try:
                method(x).mean().backward()
            except Exception as e:
                raise ExportError(f"layer {layer.name}: no gradient to the input "
                                  f"({type(e).__name__}: {e})") from e
            if x.grad is None or not torch.isfinite(x.grad).all():
                raise ExportError(f"layer {layer.name}: the gradient to the input is not finite")

    def timings(self, size: int) -> list:
        """Seconds per call of each method at batch 1."""
        x = normalization.apply(self.norm, pixels(size, 1))
        with torch.no_grad():
            return [best_time(method, x) for method in self.methods()]


def best_time(fn, x, warmup: int = 2, repeat: int = 5) -> float:
    """The fastest of `repeat` calls after `warmup` ones (TorchScript's profiling executor
    optimises a graph for a shape on its first calls; the minimum filters out other load)."""
    for _ in range(warmup):
        fn(x)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def _odd_between(a: int, b: int):
    m = (a + b) // 2 | 1
    return m if a < m < b else None


def _end(checker, default, given, scripted, candidates, side, log):
    """One end of the claimed range (`side`: "below" or "above" the default): `given`
    (checked, with the sizes between it and the default that a trace needs), else the first
    candidate that checks, else the default."""
    flag = "--min-size" if side == "below" else "--max-size"
    if given is not None:
        if given == default:
            return given
        lo, hi = sorted((given, default))
        between = [_odd_between(lo, hi)] if scripted else list(range(lo + 1, hi))
        for s in [given] + [b for b in between if b]:
            why = checker.check(s)
            if why:
                advice = "a larger --min-size" if side == "below" else "a smaller --max-size"
                raise ExportError(f"{flag} {given}: checking {s} px failed ({why}); "
                                  f"give {advice}")
        return given
    if not scripted:
        return default
    for s in candidates:
        why = checker.check(s)
        if why:
            log(f"sizes: {s} px does not check ({why})")
            continue
        odd = _odd_between(*sorted((s, default)))
        why = checker.check(odd) if odd else None
        if why:
            log(f"sizes: {odd} px does not check ({why}); claiming no size {side} the default")
            return default
        return s
    return default


def size_range(checker, default, min_size, max_size, scripted, fixed, log):
    """(min, max) input sides the archive is claimed (and was checked) to run at."""
    why = checker.check(default)
    if why:
        raise ExportError(f"the archive does not match eager PyTorch at the default size "
                          f"{default} px: {why}")
    if fixed and min_size is None and max_size is None:
        log(f"sizes: the source says the network takes only {default} px")
        return default, default
    if not scripted and (min_size is not None or max_size is not None):
        log("sizes: traced graphs froze their shapes at the default size: checking every "
            "size in the range asked for")
    smaller = sorted({c for c in (32, 64, 128, default // 2) if 0 < c < default})
    larger = [2 * default, default * 3 // 2]
    low = _end(checker, default, min_size, scripted, smaller, "below", log)
    high = _end(checker, default, max_size, scripted, larger, "above", log)
    return low, high
