"""Writes the exported-model fixtures of the worker's Rust tests (idempotent: what exists is
kept) under DIR/exported/:

- <name>/model.pt, <name>/model.json: `vephys-export` run on the networks below;
- <name>/reference.safetensors: `input`, a seeded pixel batch [2, 3, S, S] in [0, 1] at the
  manifest's default size, and per exported layer (keyed by its manifest name) the output of the
  ORIGINAL nn.Module on that input, normalised as the manifest says, taken with forward hooks
  in eager PyTorch (not from the archive, not from the exporter's graphs) and made 4-D as the
  archive's methods do;
- bad_rank/: a hand-made archive whose layer_0 returns a 3-D tensor while its manifest says
  "map" (model.pt and model.json only);
- pickled_code.pth: a checkpoint that would call os.getpid if unpickled, for the tests that
  nothing ever unpickles code.

EfficientNet-Lite0 is exported from its real weights and checked here against reference.py's
network (the built-in model's reference) at every layer.

usage: python scripts/python/make_export_fixtures.py DIR
"""
import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

WEIGHTS_DIR = os.environ.get("VEPHYS_WEIGHTS_DIR", os.path.expanduser("~/.cache/vephys/weights"))
LITE0_MODULE = "scripts/python/efficientnet_lite0_export.py"  # relative to the repository root


def lite0_spec():
    from efficientnet_lite0_export import layer_spec
    return layer_spec()


def exports():
    """(fixture name, vephys-export arguments). The claimed size ranges are narrowed to what the
    tests use: every claimed size is verified against eager PyTorch, and the default ranges
    (up to twice the input size) cost minutes on a 2-core machine."""
    random = ["--random-weights", "0"]
    return [
        ("nasnetalarge", ["--from", "timm:nasnetalarge", *random,
                          "--layers", "cell_stem_1,cell_0=Cell_0,cell_1",
                          "--min-size", "224", "--max-size", "331"]),
        ("resnet50", ["--from", "torchvision:resnet50", *random,
                      "--layers", "layer1,layer2,layer3,layer3.5,layer4",
                      "--min-size", "64", "--max-size", "224"]),
        ("convnext_tiny", ["--from", "timm:convnext_tiny", *random,
                           "--layers", "stem,stages.0,stages.1,stages.2,stages.3",
                           "--min-size", "64", "--max-size", "224"]),
        ("vit_tiny", ["--from", "timm:vit_tiny_patch16_224", *random,
                      "--layers", "blocks.0,blocks.5"]),
        ("resnet18_small", ["--from", "torchvision:resnet18", *random,
                            "--layers", "layer1,layer2", "--input-size", "64"]),
        ("efficientnet_lite0", [
            "--from", f"module:{LITE0_MODULE}:efficientnet_lite0",
            "--weights", os.path.join(WEIGHTS_DIR, "efficientnet_lite0.safetensors"),
            "--affine", f"{255 / 128!r},{-127 / 128!r}", "--input-size", "224",
            "--min-size", "96", "--max-size", "224",
            "--layers", lite0_spec()]),
    ]


def to_map(kind, t):
    """The archive's 4-D form (exporter/README.md): vectors [B,C] -> [B,C,1,1], tokens
    [B,N,C] -> [B,C,1,N]."""
    if kind == "vector":
        return t[:, :, None, None]
    if kind == "tokens":
        return t.transpose(1, 2).unsqueeze(2)
    return t


def normalise(norm, x):
    if "scale" in norm:
        return x * norm["scale"] + norm["shift"]
    mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def eager_outputs(model, names, x):
    """Each named module's output on x, with forward hooks (first call, copied before any
    in-place op changes it)."""
    modules = dict(model.named_modules())
    out, handles = {}, []
    for name in names:
        def hook(mod, args, value, name=name):
            out.setdefault(name, value.detach().clone())
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def write_reference(directory, seed=0):
    from vephys_export import rebuild

    model, doc = rebuild.network(directory)
    size = doc["input_size"]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    names = [l["name"] for l in doc["layers"]]
    outputs = eager_outputs(model, names, normalise(doc["normalization"], x))
    tensors = {"input": x}
    for layer in doc["layers"]:
        tensors[layer["name"]] = to_map(layer["output"], outputs[layer["name"]]).contiguous()
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    return tensors


def check_lite0_against_reference(tensors):
    """The exported network's eager outputs are those of reference.py's EfficientNetLite0 (which
    normalises inside) on the same pixels: the module source and the affine are right."""
    from safetensors.torch import load_file
    from reference import EfficientNetLite0

    net = EfficientNetLite0().eval()
    net.load_state_dict(load_file(os.path.join(WEIGHTS_DIR, "efficientnet_lite0.safetensors")))
    with torch.no_grad():
        want = net(tensors["input"])
    path_of = dict(p.split("=") for p in lite0_spec().split(","))
    for path, builtin in path_of.items():
        got = tensors[path]
        err = ((got - want[builtin]).abs().max() / want[builtin].abs().max()).item()
        if not err <= 1e-5:
            raise SystemExit(f"efficientnet_lite0 {path} ({builtin}): relative error {err:.1e} "
                             "against reference.py")
    print(f"efficientnet_lite0: equals reference.py at all {len(path_of)} layers")


def export(root, name, args):
    directory = os.path.join(root, "exported", name)
    if os.path.isfile(os.path.join(directory, "reference.safetensors")):
        return
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "vephys_export", *args, "--name", name, "--out", directory,
           "--force"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    took = time.perf_counter() - start
    tensors = write_reference(directory)
    if name == "efficientnet_lite0":
        check_lite0_against_reference(tensors)
    size = os.path.getsize(os.path.join(directory, "model.pt"))
    print(f"exported {name} in {took:.1f} s ({size / 1e6:.2f} MB); wrote its reference")


def bad_rank(root):
    """An archive whose layer_0 gives [B, H, W] while its manifest promises a map."""
    from vephys_export import manifest, weights

    directory = os.path.join(root, "exported", "bad_rank")
    if os.path.isfile(os.path.join(directory, "model.json")):
        return
    os.makedirs(directory, exist_ok=True)

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x

    archive = torch.jit.script(Flat())
    archive.define("def layer_0(self, x: Tensor) -> Tensor:\n    return x.mean(1)\n")
    path = os.path.join(directory, "model.pt")
    extra = {"format": "vephys-model-1", "torch": torch.__version__, "model": "bad_rank"}
    torch.jit.save(archive, path, _extra_files={"vephys.json": json.dumps(extra)})
    doc = {
        "format": "vephys-model-1",
        "model": "bad_rank",
        "architecture": "hand-made",
        "input_size": 32,
        "weights_sha256": weights.sha256_file(path),
        "layers": [{"name": "flat", "aliases": [], "channels": 3, "height": 32, "width": 32,
                    "method": "layer_0", "output": "map"}],
        "archive": "model.pt",
        "input_sizes": {"default": 32, "min": 32, "max": 32},
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "source": {"from": "hand-made", "weights": "none"},
        "graph": "script",
        "versions": manifest.versions(),
    }
    manifest.write(doc, os.path.join(directory, "model.json"))
    print("wrote bad_rank")


class RunsCode:
    """Unpickling this calls os.getpid: harmless, but code all the same."""

    def __reduce__(self):
        return (os.getpid, ())


def pickled_code(root):
    path = os.path.join(root, "exported", "pickled_code.pth")
    if not os.path.isfile(path):
        torch.save({"conv.weight": RunsCode()}, path)
        print("wrote pickled_code.pth")


def main(root):
    os.makedirs(os.path.join(root, "exported"), exist_ok=True)
    for name, args in exports():
        export(root, name, args)
    bad_rank(root)
    pickled_code(root)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(os.path.abspath(sys.argv[1]))
