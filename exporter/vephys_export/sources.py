"""Where a network comes from (`--from`): `torchvision:NAME`, `timm:NAME` or
`module:FILE.py:FUNCTION`, and what each source library documents about its input (normalisation
and size), used when the flags do not say."""
import difflib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch.nn as nn

from .errors import ExportError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("torchvision", "timm", "module")
USAGE = "use torchvision:NAME, timm:NAME or module:FILE.py:FUNCTION"


@dataclass
class Source:
    spec: str  # as given, e.g. "timm:nasnetalarge"; recorded in the manifest
    kind: str  # one of KINDS
    name: str  # the library's model name, or the function's name
    path: Optional[str] = None  # module: the Python file


def parse(spec: str) -> Source:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ExportError(f"--from {spec!r} names no source: {USAGE}")
    if kind not in KINDS:
        raise ExportError(f"unknown source kind {kind!r} in --from {spec!r}: {USAGE}")
    if kind != "module":
        return Source(spec, kind, rest)
    # the file name may contain ':' itself; the function name cannot
    path, sep, function = rest.rpartition(":")
    if not sep or not path or not function:
        raise ExportError(f"--from {spec!r}: a module source is module:FILE.py:FUNCTION")
    return Source(spec, kind, function, path)


def _close(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.6)
    return f" (close: {', '.join(close)})" if close else ""


def build(source: Source) -> nn.Module:
    """The network with freshly initialised weights, drawn from torch's global RNG (the caller
    seeds it), in eval mode."""
    if source.kind == "torchvision":
        model = _torchvision(source.name)
    elif source.kind == "timm":
        model = _timm(source.name)
    else:
        model = _module(source)
    return model.eval()


def _torchvision(name):
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise ExportError(f"torchvision has no model {name!r}{_close(name, known)}")
    return torchvision.models.get_model(name, weights=None)


def _timm(name):
    import timm

    if not timm.is_model(name):
        known = timm.list_models()
        raise ExportError(f"timm has no model {name!r}{_close(name, known)}")
    return timm.create_model(name, pretrained=False)


def load_module_file(path: str, what: str):
    """Imports a user's Python file (its own directory importable, so it can import its
    neighbours). This runs the file's code: it is the user's own network definition."""
    if not os.path.isfile(path):
        raise ExportError(f"{what}: no such file {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    name = "vephys_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ExportError(f"{what}: importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(directory)
    return module


def _module(source):
    module = load_module_file(source.path, f"--from {source.spec}")
    fn = getattr(module, source.name, None)
    if not callable(fn):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ExportError(
            f"{source.path} has no function {source.name!r}{_close(source.name, names)}")
    try:
        model = fn()
    except Exception as e:
        raise ExportError(f"{source.path}:{source.name}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ExportError(f"{source.path}:{source.name}() returned a {type(model).__name__}, "
                          "not a torch.nn.Module: return the network")
    return model


@dataclass
class InputDefaults:
    """What the source documents about its input; `note` says where it came from."""
    normalization: dict
    size: int
    fixed_size: bool  # the library says the model takes only this size (e.g. ViT)
    note: str


def defaults(source: Source, model: nn.Module) -> InputDefaults:
    if source.kind == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        return InputDefaults({"mean": list(mean), "std": list(std)}, size,
                             bool(cfg.get("fixed_input_size", False)),
                             "timm's pretrained_cfg")
    if source.kind == "torchvision":
        import torchvision

        mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
        try:  # the weights' documented preprocessing; needs no download
            t = torchvision.models.get_model_weights(source.name).DEFAULT.transforms()
            mean, std, size = t.mean, t.std, int(t.crop_size[0])
        except Exception:
            pass
        return InputDefaults({"mean": list(mean), "std": list(std)}, size, False,
                             "torchvision's weights metadata")
    return InputDefaults({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, 224, False,
                         "no library metadata for a module source: ImageNet mean/std and 224 px")
