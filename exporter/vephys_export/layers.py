"""Which layers to export (`--layers`): module paths as PyTorch names them (`cell_0`,
`layer3.5`), each with optional aliases (`cell_0=Cell_0=c0`), FX node names for values that are
not a module's output (`layer1.0.add`, a functional relu), or `all`: every module whose output is
a 4-D map, in forward order."""
import difflib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import ExportError
from .graphs import Traced


@dataclass
class Layer:
    name: str
    aliases: list
    node: fx.Node  # the traced value
    module: Optional[nn.Module]  # the module whose forward output it is (None: an FX node)
    kind: str = ""  # "map" | "vector" | "tokens", from the eager output
    shape: tuple = ()  # the method's 4-D output at the default size, batch 1
    graph: str = ""  # "script" | "trace"


def parse_spec(spec: str) -> list:
    """[(name, [aliases])] in the order given; names and aliases unique."""
    entries = []
    seen = {}
    for item in spec.split(","):
        parts = [p.strip() for p in item.split("=")]
        if not item.strip() or any(not p for p in parts):
            raise ExportError(f"--layers {spec!r}: empty layer name or alias in {item.strip()!r}; "
                              "write NAME or NAME=ALIAS, separated by commas")
        for p in parts:
            if p in seen:
                raise ExportError(f"--layers: {p!r} is used twice ({seen[p]} and {parts[0]}); "
                                  "layer names and aliases must be unique")
            seen[p] = parts[0]
        entries.append((parts[0], parts[1:]))
    return entries


def resolve(entries: list, model: nn.Module, traced: Traced) -> list:
    modules = {n: m for n, m in model.named_modules() if n}
    layers = []
    for name, aliases in entries:
        if name in modules:
            node = traced.node_for(name)
            if node is None:
                raise ExportError(
                    f"layer {name!r} runs no traced operation (an identity at inference, or "
                    "inside a module kept whole): pick its parent or a neighbouring layer")
            layers.append(Layer(name, aliases, node, modules[name]))
        elif name in traced.by_name:
            layers.append(Layer(name, aliases, traced.by_name[name], None))
        else:
            known = list(modules) + traced.node_names()
            close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
            hint = f"close: {', '.join(close)}" if close else \
                f"modules start with: {', '.join(list(modules)[:6])}"
            raise ExportError(f"unknown layer {name!r} ({hint}); --layers takes module "
                              "paths as model.named_modules() gives them, or FX node names")
    return layers


def discover(model: nn.Module, traced: Traced, x: torch.Tensor, log) -> list:
    """`--layers all`: modules whose output is a 4-D tensor, in the order their forward ends.
    A module run more than once per forward is ambiguous and left out (name one call as an FX
    node, e.g. `layer1.0.relu_1`), as is one with no traced operation of its own."""
    calls, outputs = {}, {}
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            if name not in outputs and isinstance(out, torch.Tensor) and out.dim() == 4:
                outputs[name] = len(outputs)
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        raise ExportError(f"the network does not run at {x.shape[-1]} px: "
                          f"{type(e).__name__}: {e}") from e
    finally:
        for h in handles:
            h.remove()
    repeated = [n for n in outputs if calls[n] > 1]
    ordered = [n for n in sorted(outputs, key=outputs.get) if calls[n] == 1]
    names = [n for n in ordered if traced.node_for(n) is not None]
    untraced = [n for n in ordered if traced.node_for(n) is None]
    if repeated:
        log(f"layers: all: left out {len(repeated)} modules run more than once per forward "
            f"({', '.join(repeated[:5])}{', ...' if len(repeated) > 5 else ''})")
    if untraced:
        log(f"layers: all: left out {len(untraced)} modules with no traced operation "
            f"({', '.join(untraced[:5])}{', ...' if len(untraced) > 5 else ''})")
    if not names:
        raise ExportError("--layers all: no module of the network outputs a 4-D map")
    return resolve([(n, []) for n in names], model, traced)

