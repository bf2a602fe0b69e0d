"""Weights for the network: seeded random initialisation (`--random-weights SEED`) or a file
(`--weights FILE`: safetensors, or a checkpoint that `torch.load(weights_only=True)` admits, so a
pickle that would run code is refused, never executed). Loading is strict: every tensor of the
network with its exact shape, nothing else; BatchNorm's `num_batches_tracked` counters are
training state and may be absent (old checkpoints such as Cadene's have none)."""
import hashlib
import pickle
import re
import struct

import torch
import torch.nn as nn

from . import sources
from .errors import ExportError

LAYOUTS = ("auto", "native", "cadene")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_model(source: sources.Source, seed: int) -> nn.Module:
    """The network initialised by its library's own init, drawn from a seeded RNG: the same
    seed gives the same weights with the same library versions."""
    torch.manual_seed(seed)
    return sources.build(source)


def _is_safetensors(head: bytes, size: int) -> bool:
    # an 8-byte little-endian header length, then the JSON header
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + n <= size


def read_state(path: str) -> dict:
    """The file's tensors by name."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            f.seek(0, 2)
            size = f.tell()
    except OSError as e:
        raise ExportError(f"--weights {path}: {e.strerror}") from e
    if _is_safetensors(head, size):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise ExportError(f"--weights {path}: not a readable safetensors file: {e}") from e
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ExportError(f"--weights {path} is neither safetensors nor a PyTorch checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it calls {found.group(1)})" if found else ""
        raise ExportError(
            f"--weights {path} holds pickled Python objects, not just tensors{what}: "
            "vephys-export never unpickles code; save a plain state dict or safetensors "
            "from a trusted environment") from e
    except Exception as e:
        raise ExportError(f"--weights {path}: not a readable PyTorch checkpoint: {e}") from e
    return _unwrap(state, path)


def _unwrap(state, path):
    """A plain state dict, or one inside the usual training-checkpoint keys."""
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise ExportError(f"--weights {path} is not a state dict (name -> tensor)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, state))[:8])
        raise ExportError(f"--weights {path} holds no tensors at its top level (keys: {keys})")
    # nn.DataParallel's checkpoints prefix every name
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _listing(names, limit=8):
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def classifier_name(model: nn.Module):
    """The classifier module's path, where the library says (timm's pretrained_cfg)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    return name if isinstance(name, str) else None


def apply_layout(state: dict, model: nn.Module, layout: str, path: str, log) -> dict:
    """Cadene's `pretrainedmodels` checkpoints (e.g. nasnetalarge-a1897284.pth) name every
    tensor as timm does, but their classifier has 1001 rows: row 0 is TensorFlow's background
    class. Dropping it is what both libraries do when they load those weights for 1000 classes.
    `auto` does it when the classifier has exactly one row too many."""
    if layout == "native":
        return state
    head = classifier_name(model)
    expected = model.state_dict()
    weight, bias = f"{head}.weight", f"{head}.bias"
    fits = (head is not None and weight in state and weight in expected
            and state[weight].dim() == expected[weight].dim()
            and state[weight].shape[0] == expected[weight].shape[0] + 1
            and state[weight].shape[1:] == expected[weight].shape[1:])
    if not fits:
        if layout == "cadene":
            rows = tuple(state[weight].shape) if head and weight in state else None
            raise ExportError(
                f"--weights-layout cadene: {path} has no classifier with one extra "
                f"(background) row for {head or 'this model'} (found {weight} {rows}); "
                "use --weights-layout native")
        return state
    state = dict(state)
    state[weight] = state[weight][1:]
    if bias in state:
        state[bias] = state[bias][1:]
    log(f"weights: dropped the background class (row 0) of {head}: Cadene's 1001-class layout")
    return state


def load_into(model: nn.Module, state: dict, path: str) -> None:
    expected = model.state_dict()
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in expected if k not in state and not skip(k)]
    unexpected = [k for k in state if k not in expected and not skip(k)]
    wrong = [f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shape {len(wrong)}: {_listing(wrong)}")
        raise ExportError(f"--weights {path} does not fit the network ({'; '.join(parts)}): "
                          "give the checkpoint of exactly this architecture")
    full = {k: state.get(k, v) for k, v in expected.items()}  # only counters can be absent
    model.load_state_dict(full, strict=True)


def from_file(source: sources.Source, path: str, layout: str, log) -> nn.Module:
    state = read_state(path)  # first: a bad file is refused before the network is built
    torch.manual_seed(0)  # buffers the file does not hold are the same on every run
    model = sources.build(source)
    state = apply_layout(state, model, layout, path, log)
    load_into(model, state, path)
    return model.eval()
