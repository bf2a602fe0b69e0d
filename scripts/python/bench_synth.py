"""The plain-PyTorch side of vephys's synthesis benchmark: the same network, layer, batch and
algorithm (reference.synthesize). Steady-state rate: the time from the end of the first step to
the end of the last, as the vephys side measures it. Prints one JSON line.

usage: python bench_synth.py MODEL LAYER WEIGHTS SIZE BATCH STEPS DEVICE
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file

from reference import VGG, EfficientNetLite0, synthesize

MEAN = (0.485, 0.456, 0.406)


def main(model, layer, weights, size, batch, steps, device):
    if model == "efficientnet_lite0":
        net = EfficientNetLite0()
        net.load_state_dict(load_file(weights), strict=True)
    else:
        net = VGG(model)
        net.net.load_state_dict(load_file(weights), strict=True)
    net.eval().to(device)
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

    synthesize(net, layer, filters, x0, steps + 1, on_step=on_step, **args)
    seconds = stamps[-1] - stamps[0]
    rate = batch * steps / seconds
    print(json.dumps({"image_steps_per_s": rate, "seconds": seconds,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if len(sys.argv) != 8:
        raise SystemExit(__doc__)
    m, l, w, s, b, n, d = sys.argv[1:]
    main(m, l, w, int(s), int(b), int(n), d)
