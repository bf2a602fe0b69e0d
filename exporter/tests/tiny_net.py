"""A small network for the exporter's tests, as a `module:` source: tied weights (one conv run
twice), a functional relu (an FX node, not a module), a module torch.fx cannot trace
(shape-dependent padding), a classifier (a vector output), and a module run twice."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PadToEven(nn.Module):
    """Pads odd sizes to even: Python on the input's shape, which torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 == 1:
            x = F.pad(x, [0, 1, 0, 1])
        return x


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pad = PadToEven()
        self.shared = nn.Conv2d(8, 8, 3, padding=1)  # run twice
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                   nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.pad(x)
        x = self.shared(self.shared(x))
        x = self.block(x)
        return self.head(x.mean((2, 3)))


def tiny():
    return Tiny()


def not_a_module():
    return 3


class PadToEvenUntyped(PadToEven):
    """The same, in Python TorchScript cannot compile (keyword unpacking)."""

    def forward(self, x):
        if x.shape[-1] % 2 == 1:
            x = F.pad(x, **{"pad": [0, 1, 0, 1]})
        return x


def tiny_untyped():
    """Tiny with a module TorchScript cannot compile: its graphs get traced."""
    net = Tiny()
    net.pad = PadToEvenUntyped()
    return net
