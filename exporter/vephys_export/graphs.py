"""The network as a torch.fx graph, traced once, and per layer the truncated graph that
computes only what that layer needs (the exporter's per-layer methods).

Tracing uses torchvision's NodePathTracer, so node names are module paths (`layer3.5`,
`cell_0.comb_iter_0_left`) and functional ops get their path plus the op (`layer1.0.add`), with
timm's leaf modules and wrapped functions, as timm's own feature extractor does (its SAME-padding
convolutions and pools stay whole modules, so their shape arithmetic stays dynamic). A module
whose own forward cannot be traced symbolically (shape-dependent Python, as in hand-written
SAME padding) is kept whole as a leaf too; it is compiled by torch.jit.script later."""
import math
import warnings

import torch.fx as fx
import torch.nn as nn
import torchvision
from torchvision.models.feature_extraction import NodePathTracer

from .errors import ExportError, first_line

OPS = ("call_module", "call_function", "call_method")


def _library_leaves():
    from timm.layers import _fx as timm_fx

    ops = [c for c in vars(torchvision.ops).values()
           if isinstance(c, type) and issubclass(c, nn.Module)]
    return list(timm_fx.get_notrace_modules()) + ops, list(timm_fx.get_notrace_functions())


class _ShallowTracer(fx.Tracer):
    """Traces one module's own forward with every child as a leaf."""

    def is_leaf_module(self, m, qualname):
        return True


def _untraceable_classes(model: nn.Module, known: list) -> list:
    """Module classes whose own forward torch.fx cannot trace (children aside)."""
    found = []
    for m in model.modules():
        cls = type(m)
        if m is model or cls in found or isinstance(m, tuple(known)):
            continue
        if cls.__module__.startswith("torch.nn."):
            continue  # torch.nn's own modules are leaves already
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _ShallowTracer().trace(m)
        except Exception:
            found.append(cls)
    return found


class Traced:
    """The traced network: its graph, its node names, and truncated copies."""

    def __init__(self, model: nn.Module, log):
        self.model = model
        leaves, functions = _library_leaves()
        try:
            self._trace(leaves, functions)
        except Exception as first:
            # modules whose own forward cannot be traced are kept whole, then try again
            extra = _untraceable_classes(model, leaves)
            if not extra:
                raise _cannot_trace(first) from first
            log("graph: kept whole (not traced into): "
                + ", ".join(sorted({c.__name__ for c in extra})))
            try:
                self._trace(leaves + extra, functions)
            except Exception as e:
                raise _cannot_trace(e) from e
        self.nodes = list(self.graph.nodes)
        self.position = {n: i for i, n in enumerate(self.nodes)}
        self.by_name = {name: n for n, name in self.qualname.items()}

    def _trace(self, leaves, functions):
        tracer = NodePathTracer(leaf_modules=leaves, autowrap_functions=functions,
                                autowrap_modules=(math, torchvision.ops))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tracer.trace(self.model.eval())
        self.module = fx.GraphModule(tracer.root, graph, type(self.model).__name__)
        self.graph = self.module.graph
        self.qualname = dict(tracer.node_to_qualname)

    def node_names(self) -> list:
        return list(self.by_name)

    def ops(self) -> int:
        return sum(n.op in OPS for n in self.nodes)

    def node_for(self, layer: str):
        """The node whose value is `layer`: a node of that name, or, for a module path, the
        last node inside that module (what torchvision's feature extractor returns)."""
        if layer in self.by_name:
            return self.by_name[layer]
        depth = layer.count(".")
        for n in reversed(self.nodes):
            q = self.qualname.get(n)
            if q is not None and ".".join(q.split(".")[: depth + 1]) == layer:
                return n
        return None

    def truncated(self, targets: list) -> fx.GraphModule:
        """A GraphModule computing only `targets` (one node: its value; several: a tuple).
        Nodes after the last target are never copied (so no later assertion keeps later
        layers alive), and dead code elimination drops branches the targets do not use; the
        module holds only the submodules and parameters left in the graph."""
        last = max(self.position[t] for t in targets)
        graph = fx.Graph()
        env = {}
        for n in self.nodes[: last + 1]:
            if n.op == "output":
                break
            env[n] = graph.node_copy(n, lambda a: env[a])
        graph.output(env[targets[0]] if len(targets) == 1 else tuple(env[t] for t in targets))
        fx.GraphModule(self.module, graph)  # an owner, which the purity checks need
        graph.eliminate_dead_code()
        # a fresh module from the pruned graph copies only what the graph still uses
        clean = fx.Graph()
        clean.output(clean.graph_copy(graph, {}))
        return fx.GraphModule(self.module, clean, "Layer").eval()


def ops_of(module: fx.GraphModule) -> int:
    return sum(n.op in OPS for n in module.graph.nodes)


def _cannot_trace(e: Exception) -> ExportError:
    return ExportError(f"torch.fx cannot trace the network ({type(e).__name__}: "
                       f"{first_line(e)}); make it traceable: see exporter/README.md, "
                       "'Exporting your own network'")
