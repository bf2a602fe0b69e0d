"""vephys-export: turn a PyTorch vision network into a directory the vephys worker loads without
Python: a TorchScript archive with one method per exported layer (`model.pt`) and its manifest
(`model.json`). See exporter/README.md."""

__version__ = "0.1.0"

# The manifest format this exporter writes; the worker refuses formats it does not know.
FORMAT = "vephys-model-1"
ARCHIVE = "model.pt"
MANIFEST = "model.json"
