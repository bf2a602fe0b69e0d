"""What the archive holds and how it runs: one truncated graph per layer, each parameter once
and no unused one, any batch size, gradients to the input, the torch version inside."""
import json
import os
import zipfile

import torch

from helpers import manifest
from vephys_export import weights


def archive_of(directory):
    return torch.jit.load(os.path.join(directory, "model.pt"))


def count_ops(method, kind):
    return sum(n.kind() == kind for n in method.inlined_graph.nodes())


def stored_bytes(directory):
    with zipfile.ZipFile(os.path.join(directory, "model.pt")) as z:
        return sum(i.file_size for i in z.infolist() if "/data/" in i.filename)


def test_each_method_computes_only_its_layer(resnet18_dir):
    archive = archive_of(resnet18_dir)
    convs = [count_ops(archive.layer_0, "aten::conv2d"), count_ops(archive.layer_1, "aten::conv2d"),
             count_ops(archive.layer_2, "aten::conv2d")]
    # layer1: the stem and 2 blocks of 2 convs; layer2.1: + a block with its downsample
    # (3 convs) + 2 convs; fc: all 20 convolutions of resnet18
    assert convs == [5, 10, 20]
    assert count_ops(archive.layer_0, "aten::linear") == 0
    assert count_ops(archive.layer_2, "aten::linear") == 1


def test_unused_parameters_are_left_out(nasnet_dir):
    """NASNet-Large has 88.8M parameters (355 MB); up to cell_0 it uses 0.57M."""
    size = os.path.getsize(os.path.join(nasnet_dir, "model.pt"))
    assert size < 20e6, f"{size / 1e6:.1f} MB"
    assert size < 4e6


def test_shared_parameters_are_stored_once(tiny_dir):
    """`block` uses every parameter `stem` and `shared` use (and `shared`'s conv runs twice):
    the archive holds each tensor once, as many bytes as the network's tensors up to `head`."""
    from tiny_net import Tiny

    net = Tiny()
    all_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert stored_bytes(tiny_dir) == all_bytes  # `head` uses everything; layers overlap


def test_any_batch_size_and_gradients_to_the_input(resnet18_dir, vit_dir, nasnet_dir, tiny_dir):
    """Batches the export never ran (it checked 1 and 3), with backpropagation to the image."""
    for directory, batches in ((resnet18_dir, (2, 5)), (tiny_dir, (2, 5)), (vit_dir, (2,)),
                               (nasnet_dir, (2,))):
        doc = manifest(directory)
        archive = archive_of(directory)
        size = doc["input_size"]
        for layer in doc["layers"]:
            for batch in batches:
                x = torch.randn(batch, 3, size, size, requires_grad=True)
                y = getattr(archive, layer["method"])(x)
                assert list(y.shape) == [batch, layer["channels"], layer["height"], layer["width"]]
                y.mean().backward()
                assert x.grad is not None and torch.isfinite(x.grad).all()
                assert x.grad.abs().sum() > 0, (directory, layer["name"])


def test_parameters_are_frozen_and_the_torch_version_is_inside(resnet18_dir):
    archive = archive_of(resnet18_dir)
    assert not any(p.requires_grad for p in archive.parameters())
    extra = {"vephys.json": ""}
    torch.jit.load(os.path.join(resnet18_dir, "model.pt"), _extra_files=extra)
    inside = json.loads(extra["vephys.json"])
    assert inside["torch"] == torch.__version__ == manifest(resnet18_dir)["versions"]["torch"]


def test_manifest_hash_is_the_archives(resnet18_dir):
    doc = manifest(resnet18_dir)
    assert doc["weights_sha256"] == weights.sha256_file(os.path.join(resnet18_dir, "model.pt"))
    assert list(doc)[:5] == ["format", "model", "architecture", "input_size", "weights_sha256"]
    assert set(doc["versions"]) == {"exporter", "torch", "torchvision", "timm"}
