"""Plain-PyTorch reference implementations that vephys is checked and benchmarked against.

- `EfficientNetLite0`: the network written out directly in PyTorch from the published
  architecture (TF "SAME" padding, ReLU6, no squeeze-excitation, BN eps 1e-3, input
  (255x-127)/128), loading the `_conv_stem`/`_blocks.N...` state dict with strict=True.
- `vgg(name)`: torchvision's VGG with the ImageNet normalisation folded into the forward pass.
- `synthesize`: the max-image synthesis loop of DESIGN.md section 1 as a plain PyTorch loop.

Every model takes pixel-space input in [0,1] and `forward(x, upto)` returns a dict of the named
layer outputs up to (and including) the layer `upto`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# (kernel, stride, expand ratio, in, out, repeats) of EfficientNet-Lite0's seven stages.
LITE0_STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]
BN_EPS = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def same_pad(x, k, s):
    """TensorFlow 'SAME' padding: output = ceil(in/s), extra pixel goes right/bottom."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class SameConv(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(same_pad(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias,
                        self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, k, s, e, cin, cout):
        super().__init__()
        mid = cin * e
        self.expand = e != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for k, s, e, cin, cout, r in LITE0_STAGES:
            for i in range(r):
                blocks.append(MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def layer_names(self):
        return ["stem"] + [f"blocks.{i}" for i in range(len(self._blocks))] + ["head", "logits"]

    def forward(self, x, upto="logits"):
        out = {}
        h = (x * 255.0 - 127.0) / 128.0
        h = F.relu6(self._bn0(self._conv_stem(h)))
        out["stem"] = h
        if upto == "stem":
            return out
        for i, b in enumerate(self._blocks):
            h = b(h)
            out[f"blocks.{i}"] = h
            if upto == f"blocks.{i}":
                return out
        h = F.relu6(self._bn1(self._conv_head(h)))
        out["head"] = h
        if upto == "head":
            return out
        h = self._fc(h.mean(dim=(2, 3)))
        out["logits"] = h[:, :, None, None]
        return out


class VGG(nn.Module):
    """torchvision VGG; layer names are torchvision module paths plus `avgpool`."""

    def __init__(self, name):
        super().__init__()
        self.net = getattr(torchvision.models, name)(weights=None)
        for m in self.net.modules():  # in-place ReLU would overwrite the recorded conv outputs
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def layer_names(self):
        return ([f"features.{i}" for i in range(len(self.net.features))] + ["avgpool"]
                + [f"classifier.{i}" for i in range(len(self.net.classifier))])

    def forward(self, x, upto="classifier.6"):
        out = {}
        h = (x - self.mean) / self.std
        for i, m in enumerate(self.net.features):
            h = m(h)
            out[f"features.{i}"] = h
            if upto == f"features.{i}":
                return out
        h = self.net.avgpool(h)
        out["avgpool"] = h
        if upto == "avgpool":
            return out
        h = torch.flatten(h, 1)
        for i, m in enumerate(self.net.classifier):
            h = m(h)
            out[f"classifier.{i}"] = h[:, :, None, None]
            if upto == f"classifier.{i}":
                return out
        return out


def gaussian_blur(x, sigma):
    """Separable Gaussian blur, radius ceil(3 sigma), reflect padding (no dark borders)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, [r, r, r, r], mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def synthesize(model, layer, filters, x0, steps, lr, decay, blur_sigma, blur_every, center,
               on_step=None):
    """Channel-objective gradient ascent exactly as vephys does it (DESIGN.md section 1)."""
    x = x0.clone()
    idx = torch.tensor(filters, device=x.device)
    c = torch.tensor(center, device=x.device).view(1, 3, 1, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    for step in range(steps):
        x.requires_grad_(True)
        acts = model(x, upto=layer)[layer]
        obj = acts[torch.arange(len(filters)), idx].mean(dim=(1, 2)).sum()
        (g,) = torch.autograd.grad(obj, x)
        with torch.no_grad():
            g = g / (g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-8)
            x = x.detach() + lr * g
            x = c + (1.0 - decay) * (x - c)
            if blur_every > 0 and (step + 1) % blur_every == 0:
                x = gaussian_blur(x, blur_sigma)
            x = x.clamp(0.0, 1.0)
        if on_step is not None:
            on_step()
    return x.detach()
