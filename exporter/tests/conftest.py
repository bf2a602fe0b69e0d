"""Exports shared by the tests (built once per session, at small sizes where the network
allows)."""
import os

import pytest
import torch

from vephys_export import cli

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = f"module:{os.path.join(HERE, 'tiny_net.py')}:tiny"


def export(directory, *args):
    code = cli.main([*map(str, args), "--out", str(directory)])
    assert code == 0, f"vephys-export {' '.join(map(str, args))} failed"
    return str(directory)


@pytest.fixture(scope="session")
def resnet18_dir(tmp_path_factory):
    return export(tmp_path_factory.mktemp("resnet18") / "out", "--from", "torchvision:resnet18",
                  "--random-weights", 0, "--layers", "layer1,layer2.1=l2b1,fc",
                  "--input-size", 64, "--max-size", 96)


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory):
    return export(tmp_path_factory.mktemp("vit") / "out", "--from", "timm:vit_tiny_patch16_224",
                  "--random-weights", 0, "--layers", "blocks.0,blocks.11", "--name", "vit_tiny")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return export(tmp_path_factory.mktemp("tiny") / "out", "--from", TINY, "--random-weights", 3,
                  "--layers", "stem,relu,pad,shared,block=b=blk,head", "--input-size", 32,
                  "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")


def cadene_state(seed=0):
    """timm's nasnetalarge at `seed`, saved as Cadene's pretrainedmodels checkpoint would hold
    it: a 1001-class classifier (background class first) and no BatchNorm counters."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("nasnetalarge")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    background = torch.randn(1, state["last_linear.weight"].shape[1])
    state["last_linear.weight"] = torch.cat([background, state["last_linear.weight"]])
    state["last_linear.bias"] = torch.cat([torch.zeros(1), state["last_linear.bias"]])
    return state


@pytest.fixture(scope="session")
def cadene_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cadene") / "nasnetalarge-cadene.pth"
    torch.save(cadene_state(), path)
    return str(path)


@pytest.fixture(scope="session")
def nasnet_dir(tmp_path_factory, cadene_file):
    """NASNet-Large's cell_0 (the paper's Cell_0) from weights in Cadene's layout."""
    return export(tmp_path_factory.mktemp("nasnet") / "out", "--from", "timm:nasnetalarge",
                  "--weights", cadene_file, "--layers", "cell_0=Cell_0",
                  "--min-size", 331, "--max-size", 331)
