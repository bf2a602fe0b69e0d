"""model.json, the manifest the worker and the coordinator read (format vephys-model-1; the
fields are described in exporter/README.md). Its first five fields are the registry's own, so
`vephys models add model.json` reads it as it reads `vephys-worker layers --json`."""
import json

import timm
import torch
import torchvision

from . import ARCHIVE, FORMAT, __version__


def versions() -> dict:
    return {"exporter": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}


def build(*, model, architecture, input_size, sha256, layers, sizes, norm, weights,
          graph) -> dict:
    return {
        "format": FORMAT,
        "model": model,
        "architecture": architecture,
        "input_size": input_size,
        "weights_sha256": sha256,
        "layers": [
            {"name": l.name, "aliases": list(l.aliases), "channels": l.shape[1],
             "height": l.shape[2], "width": l.shape[3], "method": f"layer_{i}",
             "output": l.kind}
            for i, l in enumerate(layers)
        ],
        "archive": ARCHIVE,
        "input_sizes": {"default": input_size, "min": sizes[0], "max": sizes[1]},
        "normalization": norm,
        "source": {"from": architecture, "weights": weights},
        "graph": graph,
        "versions": versions(),
    }


def write(manifest: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
