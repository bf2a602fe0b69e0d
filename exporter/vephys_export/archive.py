"""The TorchScript archive: per layer a compiled module (torch.jit.script of its truncated FX
graph where that compiles, else torch.jit.trace at the default size), gathered in one container
whose methods `layer_0`, `layer_1`, ... call them.

The per-layer graphs hold the network's own module objects, so a parameter used by several
layers is one tensor, and torch.jit.save writes each tensor storage once; parameters no exported
layer uses are in no graph and so not in the archive. Parameters are frozen (requires_grad
false): the worker differentiates with respect to the image only."""
import json
import os
import warnings
import zipfile

import torch
import torch.nn as nn

from . import maps
from .errors import ExportError, first_line


def compile_layer(layer, graph: nn.Module, example: torch.Tensor, log) -> torch.jit.ScriptModule:
    """Script the layer's graph (its shape logic stays dynamic: any size and batch); where
    TorchScript cannot compile it, trace it at the example's size (shape arithmetic then
    becomes constants, which is why the caller verifies every size it claims)."""
    wrapper = maps.WRAPPERS[layer.kind](graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compiled = torch.jit.script(wrapper)
            layer.graph = "script"
            return compiled
        except Exception as e:
            why = first_line(e)
        try:
            compiled = torch.jit.trace(wrapper, example, check_trace=False)
        except Exception as e:
            raise ExportError(f"layer {layer.name!r}: neither torch.jit.script ({why}) nor "
                              f"torch.jit.trace ({first_line(e)}) can compile it") from e
    layer.graph = "trace"
    log(f"layer {layer.name}: torch.jit.script failed ({why}); traced at "
        f"{example.shape[-1]} px instead")
    return compiled


class _Container(nn.Module):
    def __init__(self, compiled):
        super().__init__()
        for i, m in enumerate(compiled):
            setattr(self, f"graph_{i}", m)


def assemble(compiled: list) -> torch.jit.ScriptModule:
    archive = torch.jit.script(_Container(compiled))
    for i in range(len(compiled)):
        archive.define(f"def layer_{i}(self, x: Tensor) -> Tensor:\n"
                       f"    return self.graph_{i}(x)\n")
    return archive


def save(archive: torch.jit.ScriptModule, path: str, extra: dict) -> None:
    torch.jit.save(archive, path, _extra_files={"vephys.json": json.dumps(extra, sort_keys=True)})


def stored_tensors(path: str):
    """(count, bytes) of the tensor storages in a saved archive."""
    with zipfile.ZipFile(path) as z:
        data = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith("/")]
    return len(data), sum(i.file_size for i in data)


def tensor_bytes(modules: list):
    """(unique, counted per module) bytes of the parameters and buffers of `modules`."""
    unique, separate = {}, 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            size = t.numel() * t.element_size()
            unique[t.data_ptr()] = size
            separate += size
    return sum(unique.values()), separate


def parameter_count(modules: list) -> int:
    return sum({p.data_ptr(): p.numel() for m in modules for p in m.parameters()}.values())


def file_size(path: str) -> int:
    return os.path.getsize(path)
