"""The eager PyTorch side of an export, rebuilt from its manifest: the same network and weights
(`source.from` and `source.weights`), and per layer the truncated graph the archive's method was
compiled from, run in Python. Benchmarks and fixtures compare vephys against this."""
import os

import torch
import torch.nn as nn

from . import MANIFEST, manifest as manifests, maps, normalization, sources
from . import weights as weight_files
from .errors import ExportError
from .graphs import Traced


def read(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ExportError(f"{directory} has no {MANIFEST}: give a directory vephys-export wrote")
    return manifests.read(path)


def _find_module_file(path: str, directory: str) -> str:
    """A module source's file: as recorded (relative to the working directory or one of its
    parents, e.g. the repository root), or next to the manifest."""
    if os.path.isabs(path):
        return path
    here = os.path.abspath(os.getcwd())
    while True:
        candidate = os.path.join(here, path)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    beside = os.path.join(directory, os.path.basename(path))
    if os.path.isfile(beside):
        return beside
    raise ExportError(f"the export's source file {path} is neither below a parent of the "
                      f"working directory nor next to its manifest: run from the directory it "
                      f"was exported in, or copy the file next to {MANIFEST}")


def _find_weights(recorded: str, directory: str, given) -> str:
    """The weights file recorded as `file:BASENAME sha256:HEX`: `given`, or BASENAME next to
    the manifest or in $VEPHYS_WEIGHTS_DIR; its sha256 must match."""
    base, _, sha = recorded[len("file:"):].partition(" sha256:")
    places = [given] if given else [
        os.path.join(directory, base),
        os.path.join(os.environ.get("VEPHYS_WEIGHTS_DIR",
                                    os.path.expanduser("~/.cache/vephys/weights")), base)]
    for path in places:
        if path and os.path.isfile(path):
            if weight_files.sha256_file(path) != sha:
                raise ExportError(f"{path} is not the weights file the export used (its sha256 "
                                  "differs): give the same file")
            return path
    raise ExportError(f"weights {base} not found next to the manifest or in "
                      "$VEPHYS_WEIGHTS_DIR: give the file")


def network(directory: str, weights: str = None, log=lambda m: None):
    """(model, manifest): the network the export at `directory` came from, in eval mode, with
    frozen parameters."""
    doc = read(directory)
    source = sources.parse(doc["source"]["from"])
    if source.kind == "module":
        source.path = _find_module_file(source.path, directory)
    recorded = doc["source"]["weights"]
    if recorded.startswith("random:"):
        model = weight_files.random_model(source, int(recorded[len("random:"):]))
    elif recorded.startswith("file:"):
        path = _find_weights(recorded, directory, weights)
        model = weight_files.from_file(source, path, "auto", log)
    else:
        raise ExportError(f"unknown source.weights {recorded!r} in the manifest")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), doc


def layer_entry(doc: dict, name: str) -> dict:
    for layer in doc["layers"]:
        if layer["name"] == name or name in layer["aliases"]:
            return layer
    known = ", ".join(l["name"] for l in doc["layers"])
    raise ExportError(f"the export has no layer {name!r} (it has {known})")


class EagerLayer(nn.Module):
    """Pixels in [0, 1] -> the layer's 4-D map, in eager PyTorch: the manifest's normalisation,
    then the truncated graph, then the same conversion to a map as the archive's method."""

    def __init__(self, model: nn.Module, doc: dict, name: str, log=lambda m: None):
        super().__init__()
        entry = layer_entry(doc, name)
        traced = Traced(model, log)
        node = traced.node_for(entry["name"])
        if node is None:
            raise ExportError(f"layer {entry['name']!r} is not in the rebuilt network's graph")
        self.graph = traced.truncated([node])
        self.kind = entry["output"]
        self.norm = doc["normalization"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maps.to_map(self.kind, self.graph(normalization.apply(self.norm, x)))
