"""One export, start to end: the network and its weights, the layers, a compiled truncated graph
per layer, the archive saved and loaded back, checked against eager PyTorch, the manifest, and
the directory moved into place."""
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from . import ARCHIVE, FORMAT, MANIFEST, __version__
from . import archive as archives
from . import graphs, layers as layer_specs, manifest, maps, normalization, sources, verify
from . import weights as weight_files
from .eager import native_outputs
from .errors import ExportError
from .output import Staging

MAX_SIZE = 8192  # what the manifest format allows


@dataclass
class Options:
    source: str
    layers: str
    out: str
    weights: Optional[str] = None
    random_weights: Optional[int] = None
    weights_layout: str = "auto"
    input_size: Optional[int] = None
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    mean: Optional[str] = None
    std: Optional[str] = None
    affine: Optional[str] = None
    name: Optional[str] = None
    force: bool = False


@dataclass
class Result:
    out: str
    manifest: dict
    archive_bytes: int
    seconds: float
    errors: dict  # worst relative error per layer
    timings: list  # seconds per method call at the default size, batch 1
    whole_seconds: float  # the whole network's eager forward, same input


def _check_sizes(opts):
    for flag, v in (("--input-size", opts.input_size), ("--min-size", opts.min_size),
                    ("--max-size", opts.max_size)):
        if v is not None and not 1 <= v <= MAX_SIZE:
            raise ExportError(f"{flag} {v} is out of range: give 1 to {MAX_SIZE} px")
    size = opts.input_size
    if size is not None:
        if opts.min_size is not None and opts.min_size > size:
            raise ExportError(f"--input-size {size} is below --min-size {opts.min_size}")
        if opts.max_size is not None and opts.max_size < size:
            raise ExportError(f"--input-size {size} is above --max-size {opts.max_size}")
    if opts.min_size is not None and opts.max_size is not None and opts.min_size > opts.max_size:
        raise ExportError(f"--min-size {opts.min_size} is above --max-size {opts.max_size}")


def load_network(source, opts, log):
    """(model, provenance of its weights)."""
    if (opts.weights is None) == (opts.random_weights is None):
        raise ExportError("give exactly one of --weights FILE and --random-weights SEED")
    if opts.weights is not None:
        log(f"network: {source.spec}, weights {opts.weights}")
        model = weight_files.from_file(source, opts.weights, opts.weights_layout, log)
        base = os.path.basename(opts.weights)
        provenance = f"file:{base} sha256:{weight_files.sha256_file(opts.weights)}"
    else:
        log(f"network: {source.spec}, random weights (seed {opts.random_weights})")
        model = weight_files.random_model(source, opts.random_weights)
        provenance = f"random:{opts.random_weights}"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), provenance


def run(opts: Options, log) -> Result:
    start = time.perf_counter()
    _check_sizes(opts)
    source = sources.parse(opts.source)
    entries = None if opts.layers.strip() == "all" else layer_specs.parse_spec(opts.layers)
    name = opts.name if opts.name is not None else source.name
    if not name.strip():
        raise ExportError("--name is empty: give the registry name")
    staging = Staging(opts.out, opts.force)
    try:
        result = _export(opts, source, entries, name, staging, log, start)
        staging.commit()
        return result
    except BaseException:
        staging.abort()
        raise


def _export(opts, source, entries, name, staging, log, start):
    model, provenance = load_network(source, opts, log)
    found = sources.defaults(source, model)
    norm = normalization.from_flags(opts.mean, opts.std, opts.affine, found.normalization)
    if opts.mean is None and opts.affine is None:
        log(f"normalisation: {normalization.describe(norm)} ({found.note})")
    size = opts.input_size or found.size
    if opts.input_size is None:
        log(f"input size: {size} px ({found.note})")
    if opts.min_size is not None and opts.min_size > size or \
            opts.max_size is not None and opts.max_size < size:
        raise ExportError(f"the default input size {size} px is outside --min-size/--max-size")

    log("graph: tracing with torch.fx")
    traced = graphs.Traced(model, log)
    x = normalization.apply(norm, verify.pixels(size, 1))
    chosen = _choose_layers(model, traced, entries, x, log)

    path = staging.path(ARCHIVE)
    extra = {"format": FORMAT, "exporter": __version__, "torch": torch.__version__,
             "model": name}
    example = normalization.apply(norm, verify.pixels(size, 2))
    layer_graphs = _write_archive(model, traced, chosen, example, path, extra, log)
    how = "trace" if any(l.graph == "trace" for l in chosen) else "script"

    log("checking the archive against eager PyTorch (batch 1 and 3)")
    checker = verify.Checker(model, traced, chosen, norm, torch.jit.load(path, map_location="cpu"))
    low, high = verify.size_range(checker, size, opts.min_size, opts.max_size,
                                  how == "script", found.fixed_size, log)
    checker.gradients(size)
    log(f"checked at {', '.join(f'{s} px' for s in sorted(set(checker.checked)))}: "
        f"claiming {low}..{high} px; gradients reach the input")
    timings, whole = _time_methods(checker, model, x, chosen, log)
    archive_bytes = _report_storage(path, layer_graphs, log)

    doc = manifest.build(model=name, architecture=source.spec, input_size=size,
                         sha256=weight_files.sha256_file(path), layers=chosen,
                         sizes=(low, high), norm=norm, weights=provenance, graph=how)
    manifest.write(doc, staging.path(MANIFEST))
    return Result(os.path.abspath(opts.out), doc, archive_bytes, time.perf_counter() - start,
                  dict(checker.errors), timings, whole)


def _choose_layers(model, traced, entries, x, log):
    """The layers, each with its output kind and its method's shape at the default size."""
    if entries is None:
        chosen = layer_specs.discover(model, traced, x, log)
        log(f"layers: all: {len(chosen)} modules output 4-D maps")
    else:
        chosen = layer_specs.resolve(entries, model, traced)
    with torch.no_grad():
        native = native_outputs(model, traced, chosen, x)
    for layer in chosen:
        layer.kind = maps.kind_of(native[layer.name], layer.name)
        layer.shape = tuple(maps.to_map(layer.kind, native[layer.name]).shape)
    return chosen


def _write_archive(model, traced, chosen, example, path, extra, log):
    """Compiles each layer's truncated graph and saves the archive; returns the graphs."""
    layer_graphs, compiled = [], []
    total_ops = traced.ops()
    total_params = archives.parameter_count([model])
    for i, layer in enumerate(chosen):
        graph = traced.truncated([layer.node])
        layer_graphs.append(graph)
        compiled.append(archives.compile_layer(layer, graph, example, log))
        c, h, w = layer.shape[1:]
        alias = f" ({', '.join(layer.aliases)})" if layer.aliases else ""
        log(f"layer_{i} {layer.name}{alias}: {layer.kind} {c}x{h}x{w}, "
            f"{graphs.ops_of(graph)} of {total_ops} ops, "
            f"{archives.parameter_count([graph]) / 1e6:.2f}M of {total_params / 1e6:.2f}M "
            f"parameters, {layer.graph}")
    archives.save(archives.assemble(compiled), path, extra)
    return layer_graphs


def _time_methods(checker, model, x, chosen, log):
    """Each method's time per call against the whole network's: the truncation, measured."""
    timings = checker.timings(x.shape[-1])
    with torch.no_grad():
        whole = verify.best_time(model, x)
    log(f"timing at {x.shape[-1]} px, batch 1: the whole network {whole * 1e3:.1f} ms")
    for i, (layer, seconds) in enumerate(zip(chosen, timings)):
        log(f"layer_{i} {layer.name}: {seconds * 1e3:.1f} ms per call; largest relative error "
            f"against eager {checker.errors[layer.name]:.1e}")
    return timings, whole


def _report_storage(path, layer_graphs, log):
    """The archive's size, and its tensor data against what the layers use: each tensor once."""
    count, stored = archives.stored_tensors(path)
    unique, separate = archives.tensor_bytes(layer_graphs)
    size = archives.file_size(path)
    log(f"archive: {size / 1e6:.2f} MB, {count} tensors, {stored / 1e6:.2f} MB of tensor data "
        f"(the layers use {unique / 1e6:.2f} MB; counted per layer {separate / 1e6:.2f} MB)")
    return size
