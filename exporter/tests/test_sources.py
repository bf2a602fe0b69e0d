"""Each source kind exports, and its archive equals eager PyTorch (the original module, hooked)
at every exported layer, at batch 1 and 3, at every size the manifest claims."""
import os

import timm
import torch

from conftest import TINY, export
from helpers import assert_matches_eager, eager, manifest, normalise, relative_error, run_cli
from vephys_export import rebuild


def test_torchvision_source(resnet18_dir):
    doc = manifest(resnet18_dir)
    assert doc["format"] == "vephys-model-1"
    assert doc["model"] == "resnet18" and doc["architecture"] == "torchvision:resnet18"
    assert doc["source"] == {"from": "torchvision:resnet18", "weights": "random:0"}
    assert doc["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert doc["graph"] == "script"
    sizes = doc["input_sizes"]
    assert (doc["input_size"], sizes["default"], sizes["max"]) == (64, 64, 96)
    assert sizes["min"] <= 32  # scripted: the network's own range, down to the smallest checked
    layers = {l["name"]: l for l in doc["layers"]}
    assert [l["method"] for l in doc["layers"]] == ["layer_0", "layer_1", "layer_2"]
    assert (layers["layer1"]["channels"], layers["layer1"]["height"]) == (64, 16)
    assert layers["layer2.1"]["aliases"] == ["l2b1"]
    assert layers["fc"]["output"] == "vector"
    assert (layers["fc"]["channels"], layers["fc"]["height"], layers["fc"]["width"]) == (1000, 1, 1)
    assert_matches_eager(resnet18_dir)


def test_timm_source_with_tokens(vit_dir):
    doc = manifest(vit_dir)
    assert doc["model"] == "vit_tiny"
    assert doc["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    # timm says ViT takes only its own size
    assert doc["input_sizes"] == {"default": 224, "min": 224, "max": 224}
    for layer in doc["layers"]:
        assert layer["output"] == "tokens"
        # [B, 197, 192] tokens become [B, 192, 1, 197]: the class token and 196 patches
        assert (layer["channels"], layer["height"], layer["width"]) == (192, 1, 197)
    assert_matches_eager(vit_dir)


def test_module_source_with_an_untraceable_module_and_a_functional_node(tiny_dir):
    doc = manifest(tiny_dir)
    assert doc["architecture"].startswith("module:") and doc["model"] == "tiny"
    assert doc["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    layers = {l["name"]: l for l in doc["layers"]}
    assert layers["block"]["aliases"] == ["b", "blk"]
    assert layers["head"]["output"] == "vector"
    assert layers["relu"]["channels"] == 8  # F.relu after the stem: an FX node
    # PadToEven makes odd sizes even: the scripted archive keeps that logic
    assert doc["graph"] == "script"
    assert_matches_eager(tiny_dir, sizes=[32, 33, 47])


def test_timm_nasnet_from_cadenes_layout_is_the_same_network(nasnet_dir):
    """Weights saved in Cadene's pretrainedmodels layout (1001 classes, no BatchNorm counters)
    give the network whose weights they are: the archive equals timm's model with them."""
    doc = manifest(nasnet_dir)
    assert doc["layers"][0]["name"] == "cell_0" and doc["layers"][0]["aliases"] == ["Cell_0"]
    assert (doc["layers"][0]["channels"], doc["layers"][0]["height"]) == (1008, 42)
    assert doc["input_sizes"] == {"default": 331, "min": 331, "max": 331}
    assert doc["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert doc["source"]["weights"].startswith("file:nasnetalarge-cadene.pth sha256:")
    torch.manual_seed(0)
    original = timm.create_model("nasnetalarge").eval()
    x = torch.rand(3, 3, 331, 331, generator=torch.Generator().manual_seed(5))
    want = eager(original, doc, x)["cell_0"]
    archive = torch.jit.load(os.path.join(nasnet_dir, "model.pt"))
    for batch in (1, 3):
        with torch.no_grad():
            got = archive.layer_0(normalise(doc["normalization"], x[:batch]))
        assert relative_error(got, want[:batch]) <= 1e-4


def test_rebuilt_eager_layer_equals_the_archive(resnet18_dir):
    """What bench_synth.py --export-dir runs: the eager truncated graph, pixels in."""
    model, doc = rebuild.network(resnet18_dir)
    layer = rebuild.EagerLayer(model, doc, "l2b1")
    archive = torch.jit.load(os.path.join(resnet18_dir, "model.pt"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(archive.layer_1(normalise(doc["normalization"], x)), layer(x)) <= 1e-4


def test_a_graph_torchscript_cannot_compile_is_traced_and_claimed_at_its_size_only(tmp_path,
                                                                                   capsys):
    source = TINY.replace(":tiny", ":tiny_untyped")
    args = ["--from", source, "--random-weights", 0, "--layers", "stem,block", "--input-size", 32]
    directory = export(tmp_path / "out", *args)
    doc = manifest(directory)
    assert doc["graph"] == "trace"  # `block` is traced; `stem` (before the pad) is scripted
    assert doc["input_sizes"] == {"default": 32, "min": 32, "max": 32}
    assert_matches_eager(directory, sizes=[32])
    # the traced pad is frozen at 32 px (even: no padding); asked to claim 31, the check fails
    status, _, err = run_cli([*args, "--min-size", 31, "--out", tmp_path / "wide"], capsys)
    assert status == 1 and "--min-size 31: checking 31 px failed" in err
    assert not (tmp_path / "wide").exists()
