"""The `vephys-export` command. Progress goes to stderr, the summary to stdout; a user error is
one line on stderr and exit status 1 (2 for malformed flags), with nothing written to --out."""
import argparse
import sys

from . import __version__
from .errors import ExportError
from .export import Options, run
from .weights import LAYOUTS

PROG = "vephys-export"


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Export a PyTorch vision network to a TorchScript "
                "archive and manifest that the vephys worker runs without Python.")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="torchvision:NAME, timm:NAME or module:FILE.py:FUNCTION "
                        "(a function returning the nn.Module)")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights", metavar="FILE",
                   help="safetensors, or a checkpoint torch.load(weights_only=True) admits; "
                        "loaded strictly")
    w.add_argument("--random-weights", type=int, metavar="SEED",
                   help="the library's own initialisation, seeded")
    p.add_argument("--weights-layout", choices=LAYOUTS, default="auto",
                   help="cadene: drop the background class (row 0) of a 1001-class classifier, "
                        "as in Cadene's pretrainedmodels checkpoints; auto (default) does it "
                        "when the classifier has exactly one extra row")
    p.add_argument("--layers", required=True, metavar="L1,L2|all",
                   help="module paths (or FX node names), each optionally NAME=ALIAS[=ALIAS]; "
                        "all: every module with a 4-D output, in forward order")
    p.add_argument("--input-size", type=int, metavar="N",
                   help="default input side in px (default: the source's documented size)")
    p.add_argument("--min-size", type=int, metavar="N",
                   help="smallest side to claim (checked); default: the smallest that checks")
    p.add_argument("--max-size", type=int, metavar="N",
                   help="largest side to claim (checked); default: the largest that checks")
    p.add_argument("--mean", metavar="R,G,B", help="normalisation (x - mean) / std")
    p.add_argument("--std", metavar="R,G,B", help="with --mean")
    p.add_argument("--affine", metavar="SCALE,SHIFT", help="normalisation x * scale + shift")
    p.add_argument("--name", help="registry name (default: the source's NAME)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (must not exist, or be empty)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out (only once the new export is complete)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    opts = Options(**{k: v for k, v in vars(args).items()})
    try:
        result = run(opts, log)
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    m = result.manifest
    names = ", ".join(l["name"] for l in m["layers"])
    worst = max(result.errors.values()) if result.errors else 0.0
    sizes = m["input_sizes"]
    print(f"exported {m['model']} ({m['architecture']}) to {result.out}")
    print(f"  layers: {len(m['layers'])} ({names})")
    print(f"  archive: {m['archive']}, {result.archive_bytes / 1e6:.2f} MB, "
          f"sha256 {m['weights_sha256']}")
    print(f"  graph: {m['graph']}; sizes {sizes['min']}..{sizes['max']} px "
          f"(default {sizes['default']}); max relative error vs eager {worst:.1e}")
    print(f"  took {result.seconds:.1f} s")
    return 0
