"""Every exported method returns one 4-D map [B, C, h, w], whatever its layer puts out:

- a map [B, C, h, w] as it is ("map");
- a vector [B, C] (a classifier, a pooled feature) as [B, C, 1, 1] ("vector");
- transformer tokens [B, N, C] (a ViT block) as [B, C, 1, N] ("tokens"): channels stay
  channels and the tokens lie along the width, so the worker's channel objective is the mean
  over all tokens, class token included, and its unit objective one token.

The wrappers below are compiled into the archive; `to_map` is the same conversion in eager
PyTorch, for the references the archive is checked against."""
import torch
import torch.nn as nn

from .errors import ExportError


def kind_of(value, layer: str) -> str:
    if not isinstance(value, torch.Tensor):
        raise ExportError(f"layer {layer!r} outputs a {type(value).__name__}, not a tensor: "
                          "pick a layer that returns one tensor")
    kinds = {4: "map", 2: "vector", 3: "tokens"}
    if value.dim() not in kinds:
        raise ExportError(f"layer {layer!r} outputs a {value.dim()}-D tensor "
                          f"{list(value.shape)}: only 4-D maps, 2-D vectors and 3-D tokens "
                          "[B, N, C] can be exported")
    return kinds[value.dim()]


def to_map(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == "vector":
        return t[:, :, None, None]
    if kind == "tokens":
        return t.transpose(1, 2).unsqueeze(2).contiguous()
    return t


class MapOutput(nn.Module):
    # `body`, not `graph`: a ScriptModule's `graph` is its forward's IR
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class VectorOutput(MapOutput):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, :, None, None]


class TokensOutput(MapOutput):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).transpose(1, 2).unsqueeze(2).contiguous()


WRAPPERS = {"map": MapOutput, "vector": VectorOutput, "tokens": TokensOutput}
