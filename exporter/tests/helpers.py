"""Shared checks: the archive against eager PyTorch, computed here independently of the
exporter's own verification (forward hooks on the rebuilt original module)."""
import json
import os
import subprocess
import sys

import torch

from vephys_export import cli, rebuild

TOLERANCE = 1e-4


def run_cli(args, capsys):
    """(exit status, stdout, stderr) of vephys-export run in this process."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vephys_export", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def manifest(directory):
    with open(os.path.join(directory, "model.json")) as f:
        return json.load(f)


def to_map(kind, t):
    if kind == "vector":
        return t[:, :, None, None]
    if kind == "tokens":
        return t.transpose(1, 2).unsqueeze(2)
    return t


def normalise(norm, x):
    if "scale" in norm:
        return x * norm["scale"] + norm["shift"]
    mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(norm["std"]).view(1, 3, 1, 1)


class _Done(Exception):
    pass


def eager(model, doc, x):
    """{layer: 4-D output} of the original module (hooks; FX-node layers via their graph)."""
    modules = dict(model.named_modules())
    hooked = [l["name"] for l in doc["layers"] if l["name"] in modules]
    out, handles = {}, []
    for name in hooked:
        def hook(module, args, value, name=name):  # returns None: the output stays as is
            out.setdefault(name, value.clone())  # the first call, as the graph takes
            if all(n in out for n in hooked):
                raise _Done  # the rest of the network is not needed
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        try:
            model(normalise(doc["normalization"], x))
        except _Done:
            pass
        finally:
            for h in handles:  # before any tracing: torch.fx would run them on proxies
                h.remove()
        for layer in doc["layers"]:
            if layer["name"] not in modules:  # an FX node: EagerLayer normalises the pixels
                out[layer["name"]] = rebuild.EagerLayer(model, doc, layer["name"])(x)
                continue
            out[layer["name"]] = to_map(layer["output"], out[layer["name"]])
    return out


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def claimed_sizes(doc):
    s = doc["input_sizes"]
    middle = [(s["min"] + s["default"]) // 2 | 1, (s["default"] + s["max"]) // 2 | 1]
    inside = [m for m in middle if s["min"] <= m <= s["max"]]
    return sorted({s["min"], s["default"], s["max"], *inside})


def assert_matches_eager(directory, sizes=None):
    """Every method equals the original module at batch 1 and 3 at every given size (default:
    the manifest's min, default, max and an odd size between); returns the worst error."""
    doc = manifest(directory)
    model, _ = rebuild.network(directory)
    archive = torch.jit.load(os.path.join(directory, doc["archive"]))
    worst = 0.0
    for size in sizes or claimed_sizes(doc):
        x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
        want = eager(model, doc, x)
        for layer in doc["layers"]:
            method = getattr(archive, layer["method"])
            for batch in (1, 3):
                with torch.no_grad():
                    got = method(normalise(doc["normalization"], x[:batch]))
                ref = want[layer["name"]][:batch]
                assert got.shape == ref.shape, (layer["name"], size, batch)
                err = relative_error(got, ref)
                assert err <= TOLERANCE, f"{layer['name']} at {size} px, batch {batch}: {err:.1e}"
                worst = max(worst, err)
    return worst
