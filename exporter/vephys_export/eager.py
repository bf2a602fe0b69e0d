"""Reference outputs from eager PyTorch: the original nn.Module run as its library wrote it,
with forward hooks on the exported layers' modules (FX-node layers, which no hook can see, run
through the traced graph in Python). The archive is checked against these, and the test
fixtures hold them."""
import torch
import torch.nn as nn

from . import maps
from .errors import ExportError
from .graphs import Traced


class _Enough(Exception):
    """Raised from the last hook: the rest of the forward pass is not needed."""


def native_outputs(model: nn.Module, traced: Traced, layers: list, x: torch.Tensor) -> dict:
    """Each layer's output as the network produces it ({name: tensor or other value}). A
    module run more than once gives its first call, as the traced graph does."""
    out = {}
    hooked = [l for l in layers if l.module is not None]
    pending = {l.name for l in hooked}
    nodes = [l for l in layers if l.module is None]
    handles = []
    for layer in hooked:
        def hook(mod, args, value, name=layer.name):
            if name in out:
                return
            # a copy: a later in-place op (ReLU(inplace=True)) must not change it
            out[name] = value.clone() if isinstance(value, torch.Tensor) else value
            pending.discard(name)
            if not pending:
                raise _Enough
        handles.append(layer.module.register_forward_hook(hook))
    try:
        if hooked:
            model(x)
    except _Enough:
        pass
    except Exception as e:
        raise ExportError(f"the network does not run at {x.shape[-1]} px: "
                          f"{type(e).__name__}: {e}") from e
    finally:
        for h in handles:
            h.remove()
    if pending:
        raise ExportError(f"layer {sorted(pending)[0]!r} never runs in the network's forward "
                          "pass: pick a layer that does")
    if nodes:
        try:
            values = traced.truncated([l.node for l in nodes])(x)
        except Exception as e:
            raise ExportError(f"the network does not run at {x.shape[-1]} px: "
                              f"{type(e).__name__}: {e}") from e
        values = values if len(nodes) > 1 else (values,)
        out.update({l.name: v for l, v in zip(nodes, values)})
    return out


def reference_maps(model, traced, layers, x) -> dict:
    """Each layer's eager output in the archive's 4-D form ({name: [B, C, h, w]})."""
    with torch.no_grad():
        native = native_outputs(model, traced, layers, x)
    return {l.name: maps.to_map(l.kind, native[l.name]) for l in layers}
