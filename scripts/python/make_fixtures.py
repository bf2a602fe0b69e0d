"""Writes the test fixtures vephys's Rust tests compare against (idempotent; DIR defaults to
$VEPHYS_FIXTURES):

- vgg16.safetensors, vgg19.safetensors: torchvision VGGs with random (seeded) weights;
- {vgg16,vgg19,efficientnet_lite0}_reference.safetensors: a random pixel-space input `input`
  and the reference network's output at every named layer (`features.18`, `blocks.7`, ...);
- photos/*.png: scikit-image's bundled natural photos (RGB, 8-bit);
- photos.json: EfficientNet-Lite0 top-1 class of each photo resized to 224 by the reference.

usage: python make_fixtures.py [DIR]
"""
import json
import os
import sys

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from reference import VGG, EfficientNetLite0

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse",
          "hubble_deep_field", "immunohistochemistry", "colorwheel", "brick", "grass", "gravel",
          "moon", "page", "text", "logo", "cat", "motorcycle_left"]


def reference_outputs(model, path, size, batch, seed):
    if os.path.exists(path):
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    with torch.no_grad():
        out = model(x)
    tensors = {"input": x}
    tensors.update({k: v.clone().contiguous() for k, v in out.items()})
    save_file(tensors, path)
    print(f"wrote {path}")


def main(root):
    os.makedirs(os.path.join(root, "photos"), exist_ok=True)
    torch.manual_seed(0)
    for name in ["vgg16", "vgg19"]:
        weights = os.path.join(root, f"{name}.safetensors")
        model = VGG(name).eval()
        if os.path.exists(weights):
            model.net.load_state_dict(load_file(weights), strict=True)
        else:
            save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, weights)
            print(f"wrote {weights}")
        reference_outputs(model, os.path.join(root, f"{name}_reference.safetensors"), 64, 2, 1)

    lite = EfficientNetLite0().eval()
    weights_dir = os.environ.get("VEPHYS_WEIGHTS_DIR", os.path.expanduser("~/.cache/vephys/weights"))
    lite.load_state_dict(load_file(os.path.join(weights_dir, "efficientnet_lite0.safetensors")),
                         strict=True)
    reference_outputs(lite, os.path.join(root, "efficientnet_lite0_reference.safetensors"), 224, 2, 2)

    top1 = {}
    for name in PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception as e:  # some datasets need a download: not available offline
            print(f"skipping skimage.data.{name}: {e.__class__.__name__}")
            continue
        if not isinstance(img, np.ndarray):
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] not in (3, 4):
            continue
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float64) / img.max(), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, "photos", f"{name}.png"))
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            top1[name] = int(lite(x)["logits"].flatten().argmax())
    with open(os.path.join(root, "photos.json"), "w") as f:
        json.dump(top1, f, indent=1, sort_keys=True)
    print(f"photos: {sorted(top1)}; top-1 chelsea={top1.get('chelsea')} coffee={top1.get('coffee')}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ["VEPHYS_FIXTURES"])
