"""Convert a PyTorch checkpoint (a plain state dict, e.g. torchvision's vgg19-dcbb9e9d.pth) to
safetensors, the only weight format vephys loads.

Safe on untrusted files: torch.load(weights_only=True) restricts unpickling to tensors and plain
containers, so a checkpoint cannot run code. BatchNorm's `num_batches_tracked` counters are dropped
(they are training state, not weights).

usage: python pth_to_safetensors.py IN.pth OUT.safetensors
"""
import os
import sys

import torch
from safetensors.torch import save_file


def convert(src: str, dst: str) -> int:
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SystemExit(f"{src}: expected a state dict (name -> tensor), found {type(state).__name__}")
    tensors = {
        name: t.detach().to(torch.float32).contiguous()
        for name, t in state.items()
        if isinstance(t, torch.Tensor) and not name.endswith("num_batches_tracked")
    }
    if not tensors:
        raise SystemExit(f"{src}: no tensors found")
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_file(tensors, dst)
    return len(tensors)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    n = convert(sys.argv[1], sys.argv[2])
    print(f"wrote {n} tensors to {sys.argv[2]}")
