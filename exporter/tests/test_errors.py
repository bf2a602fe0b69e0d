"""Bad input: one clear line on stderr, a non-zero exit, and nothing written to --out."""
import os

import torch
import torchvision

from conftest import TINY
from helpers import run_cli, run_subprocess


def assert_refused(capsys, tmp_path, args, *expect, code=None):
    out = tmp_path / "out"
    status, _, err = run_cli([*args, "--out", out], capsys)
    assert status != 0 and (code is None or status == code)
    lines = [l for l in err.splitlines() if "error" in l]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expect:
        assert text in lines[0], lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
    return lines[0]


RESNET = ["--from", "torchvision:resnet18", "--random-weights", 0, "--input-size", 32]


def test_unknown_source(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["--from", "keras:vgg16", "--random-weights", 0,
                                      "--layers", "a"], "unknown source kind 'keras'")
    assert_refused(capsys, tmp_path, ["--from", "timm:convnext_tinny", "--random-weights", 0,
                                      "--layers", "a"], "timm has no model", "convnext_tiny")
    assert_refused(capsys, tmp_path, ["--from", "torchvision:resnet5", "--random-weights", 0,
                                      "--layers", "a"], "torchvision has no model")
    assert_refused(capsys, tmp_path, ["--from", f"{TINY[:-len(':tiny')]}:tiny_net",
                                      "--random-weights", 0, "--layers", "a"],
                   "has no function 'tiny_net'")
    assert_refused(capsys, tmp_path, ["--from", f"{TINY[:-len(':tiny')]}:not_a_module",
                                      "--random-weights", 0, "--layers", "a"],
                   "not a torch.nn.Module")
    assert_refused(capsys, tmp_path, ["--from", "module:nowhere.py:f", "--random-weights", 0,
                                      "--layers", "a"], "no such file")


def test_unknown_layer_names_close_matches(capsys, tmp_path):
    line = assert_refused(capsys, tmp_path, [*RESNET, "--layers", "layer1,layer2.3"],
                          "unknown layer 'layer2.3'")
    assert "layer2.1" in line


def test_weights_flags_exactly_one(capsys, tmp_path):
    base = ["--from", "torchvision:resnet18", "--layers", "layer1"]
    assert_refused(capsys, tmp_path, [*base, "--random-weights", 0, "--weights", "w.pth"],
                   "not allowed with argument", code=2)
    assert_refused(capsys, tmp_path, base, "--weights", "--random-weights", code=2)


def test_weights_that_do_not_fit_name_the_keys(capsys, tmp_path):
    state = torchvision.models.resnet18().state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["fc.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    line = assert_refused(capsys, tmp_path, ["--from", "torchvision:resnet18", "--weights", path,
                                             "--layers", "layer1"],
                          "missing 1: layer1.0.conv1.weight", "unexpected 1: extra.weight",
                          "fc.bias (file [7], model [1000])")
    assert "does not fit" in line


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_code_is_never_run(capsys, tmp_path):
    marker = str(tmp_path / "code-ran")
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": RunsCode(marker)}, path)
    assert_refused(capsys, tmp_path, ["--from", "torchvision:resnet18", "--weights", path,
                                      "--layers", "layer1"], "never unpickles code", "mkdir")
    assert not os.path.exists(marker)


def test_not_a_checkpoint(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert_refused(capsys, tmp_path, ["--from", "torchvision:resnet18", "--weights", path,
                                      "--layers", "layer1"], "neither safetensors nor")


def test_out_of_range_sizes(capsys, tmp_path):
    base = ["--from", "torchvision:resnet18", "--random-weights", 0, "--layers", "layer1"]
    assert_refused(capsys, tmp_path, [*base, "--input-size", 0], "--input-size 0 is out of range")
    assert_refused(capsys, tmp_path, [*base, "--input-size", 9000], "out of range")
    assert_refused(capsys, tmp_path, [*base, "--input-size", 64, "--min-size", 128],
                   "below --min-size")


def test_a_size_the_network_does_not_take(capsys, tmp_path):
    assert_refused(capsys, tmp_path, ["--from", "timm:vit_tiny_patch16_224", "--random-weights",
                                      0, "--layers", "blocks.0", "--input-size", 112],
                   "does not run at 112 px")


def test_duplicate_names(capsys, tmp_path):
    assert_refused(capsys, tmp_path, [*RESNET, "--layers", "layer1=a,layer2=a"],
                   "'a' is used twice")
    assert_refused(capsys, tmp_path, [*RESNET, "--layers", "layer1,layer2=layer1"],
                   "'layer1' is used twice")
    assert_refused(capsys, tmp_path, [*RESNET, "--layers", "layer1,,layer2"], "empty layer name")


def test_bad_normalisation_flags(capsys, tmp_path):
    base = [*RESNET, "--layers", "layer1"]
    assert_refused(capsys, tmp_path, [*base, "--mean", "0.5,0.5,0.5"], "go together")
    assert_refused(capsys, tmp_path, [*base, "--affine", "2,1", "--mean", "0,0,0", "--std",
                                      "1,1,1"], "not both")
    assert_refused(capsys, tmp_path, [*base, "--mean", "0,0", "--std", "1,1,1"],
                   "3 comma-separated")
    assert_refused(capsys, tmp_path, [*base, "--mean", "0,0,0", "--std", "1,0,1"], "positive")


def test_existing_output_needs_force(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [*RESNET, "--layers", "layer1", "--min-size", 32, "--max-size", 32, "--out", out]
    status, _, err = run_cli(args, capsys)
    assert status == 1 and "not empty: pass --force" in err
    assert (out / "keep.txt").read_text() == "mine"
    # an empty directory is fine; --force replaces a full one, once the new export is complete
    status, _, _ = run_cli([*args, "--force"], capsys)
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_command_line_entry_points(tmp_path):
    """`python -m vephys_export` (and so the console script) prints one error line."""
    result = run_subprocess(["--from", "nowhere:x", "--random-weights", 0, "--layers", "a",
                             "--out", tmp_path / "out"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "vephys-export: error: unknown source kind 'nowhere' in --from 'nowhere:x': use "
        "torchvision:NAME, timm:NAME or module:FILE.py:FUNCTION"]
    assert not (tmp_path / "out").exists()
