"""The plain-PyTorch side of vephys's synthesis benchmark: the same network, layer, batch,
algorithm (reference.synthesize), precision and memory format. Steady-state rate: the time from
the end of the first step to the end of the last, as the vephys side measures it. Prints one
JSON line.

usage: python bench_synth.py MODEL LAYER WEIGHTS SIZE BATCH STEPS DEVICE [PRECISION [LAYOUT]]
       python bench_synth.py --export-dir DIR LAYER SIZE BATCH STEPS DEVICE [PRECISION [LAYOUT]]

WEIGHTS is a safetensors file, or `random` (seeded random weights: rates do not depend on the
values). PRECISION is fp32 (default) or bf16: the forward pass under
torch.autocast(DEVICE, dtype=torch.bfloat16), as PyTorch recommends for mixed precision, the
layer's output taken back to fp32 for the objective. LAYOUT is contiguous (default) or
channels_last: the images (and so every map) and the weights in that memory format.

With --export-dir, the network is the one a vephys-export directory came from, rebuilt from its
model.json (source, and the same random seed or weights file), truncated at LAYER (a name or an
alias) as the archive's method is, and run eagerly with the manifest's normalisation applied.
"""
import json
import sys
import time

import torch

from reference import VGG, EfficientNetLite0, synthesize

MEAN = (0.485, 0.456, 0.406)


class ExportedLayer(torch.nn.Module):
    """reference.synthesize's model interface (`model(x, upto=layer)[layer]`) over the eager
    truncated network of an export: pixels in, the layer's 4-D map out."""

    def __init__(self, directory, layer):
        super().__init__()
        from vephys_export import rebuild

        model, doc = rebuild.network(directory)
        self.eager = rebuild.EagerLayer(model, doc, layer)

    def forward(self, x, upto):
        return {upto: self.eager(x)}


class Mixed(torch.nn.Module):
    """`net` run in `precision` with maps in `layout`; the layer's output comes back fp32."""

    def __init__(self, net, device, precision, layout):
        super().__init__()
        self.net = net
        self.device_type = torch.device(device).type
        self.bf16 = precision == "bf16"
        self.channels_last = layout == "channels_last"

    def forward(self, x, upto):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(x, upto=upto)[upto]
        return {upto: out.float()}


def build(model, weights):
    torch.manual_seed(0)
    if model == "efficientnet_lite0":
        net = EfficientNetLite0()
        target = net
    else:
        net = VGG(model)
        target = net.net
    if weights != "random":
        from safetensors.torch import load_file

        target.load_state_dict(load_file(weights), strict=True)
    return net


def main(net, layer, size, batch, steps, device, precision="fp32", layout="contiguous"):
    if precision not in ("fp32", "bf16") or layout not in ("contiguous", "channels_last"):
        raise SystemExit(__doc__)
    net.eval().to(device)
    if layout == "channels_last":
        net.to(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    model = Mixed(net, device, precision, layout)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.tensor(MEAN).view(1, 3, 1, 1) + 0.1 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)
    x0 = x0.to(device)
    filters = list(range(batch))
    args = dict(lr=0.05, decay=1e-4, blur_sigma=1.0, blur_every=4, center=MEAN)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    stamps = []

    def on_step():
        sync()
        stamps.append(time.perf_counter())

    synthesize(model, layer, filters, x0, steps + 1, on_step=on_step, **args)
    seconds = stamps[-1] - stamps[0]
    rate = batch * steps / seconds
    print(json.dumps({"image_steps_per_s": rate, "seconds": seconds, "precision": precision,
                      "layout": layout, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    if len(sys.argv) < 8 or len(sys.argv) > 10:
        raise SystemExit(__doc__)
    if sys.argv[1] == "--export-dir":
        directory, l, s, b, n, d = sys.argv[2:8]
        main(ExportedLayer(directory, l), l, int(s), int(b), int(n), d, *sys.argv[8:])
    else:
        m, l, w, s, b, n, d = sys.argv[1:8]
        main(build(m, w), l, int(s), int(b), int(n), d, *sys.argv[8:])
