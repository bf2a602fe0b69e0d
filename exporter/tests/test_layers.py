"""`--layers all` and layer names."""
import pytest

from conftest import TINY, export
from helpers import assert_matches_eager, manifest


@pytest.fixture(scope="module")
def tiny_all_dir(tmp_path_factory):
    return export(tmp_path_factory.mktemp("tiny_all") / "out", "--from", TINY,
                  "--random-weights", 1, "--layers", "all", "--input-size", 32,
                  "--max-size", 32)


def test_all_finds_the_4d_maps_in_forward_order(tiny_all_dir):
    doc = manifest(tiny_all_dir)
    # not the root, not `head` (a vector), not `shared` (run twice: which call?); a container
    # comes after its children, when its forward ends
    assert [l["name"] for l in doc["layers"]] == ["stem", "pad", "block.0", "block.1",
                                                  "block.2", "block"]
    assert [l["method"] for l in doc["layers"]] == [f"layer_{i}" for i in range(6)]
    assert all(l["output"] == "map" for l in doc["layers"])
    assert_matches_eager(tiny_all_dir)


def test_all_on_a_library_model(tmp_path):
    """AlexNet: its 13 feature modules (convolutions, in-place ReLUs, pools), the `features`
    container after them, the average pool; not the classifier's vectors."""
    directory = export(tmp_path / "out", "--from", "torchvision:alexnet", "--random-weights", 0,
                       "--layers", "all", "--input-size", 64, "--min-size", 64, "--max-size", 64)
    names = [l["name"] for l in manifest(directory)["layers"]]
    assert names == [f"features.{i}" for i in range(13)] + ["features", "avgpool"]
    assert_matches_eager(directory)
