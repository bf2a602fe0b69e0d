"""EfficientNet-Lite0 as a `module:` source for vephys-export: reference.py's network (the same
`_conv_stem` / `_blocks.N` / `_fc` weights as vephys's built-in model) in the form an export
wants:

- forward takes already-normalised input (the worker applies x * 255/128 - 127/128, recorded
  as --affine in the manifest), and returns the logits [B, 1000];
- the built-in model's `stem` and `head` are module outputs here (`_stem_act`, `_head_act`,
  parameter-free ReLU6 modules), so every built-in layer has a module path to export;
- the TF-SAME convolutions get a type-annotated forward that TorchScript compiles, so the
  archive is scripted and runs at any input size like the built-in model. torch.fx cannot trace
  their shape arithmetic; vephys-export keeps such modules whole in the graph.

    vephys-export --from module:scripts/python/efficientnet_lite0_export.py:efficientnet_lite0 \
        --weights ~/.cache/vephys/weights/efficientnet_lite0.safetensors \
        --affine 1.9921875,-0.9921875 \
        --layers "$(python scripts/python/efficientnet_lite0_export.py)" \
        --out DIR

(running this file prints that --layers value: each PyTorch path with its built-in name as
alias, e.g. `_blocks.7=blocks.7`.)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from reference import EfficientNetLite0, SameConv

# What the built-in model does to pixels in [0, 1]: (255x - 127) / 128.
AFFINE = (255.0 / 128.0, -127.0 / 128.0)


class ScriptableSameConv(SameConv):
    """reference.SameConv with TorchScript-compatible padding (integer ceil division)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        ih, iw = x.shape[-2], x.shape[-1]
        ph = max(((ih + s - 1) // s - 1) * s + k - ih, 0)
        pw = max(((iw + s - 1) // s - 1) * s + k - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ExportableLite0(EfficientNetLite0):
    def __init__(self):
        super().__init__()
        self._stem_act = nn.ReLU6()
        self._head_act = nn.ReLU6()
        for m in self.modules():
            if type(m) is SameConv:
                m.__class__ = ScriptableSameConv

    def forward(self, x):
        h = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = self._head_act(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(2, 3)))


def efficientnet_lite0() -> nn.Module:
    return ExportableLite0()


def layer_spec() -> str:
    """--layers: each built-in layer's PyTorch path here, with the built-in name as alias."""
    paths = ["_stem_act=stem"] + [f"_blocks.{i}=blocks.{i}" for i in range(16)]
    return ",".join(paths + ["_head_act=head", "_fc=logits"])


if __name__ == "__main__":
    print(layer_spec())
