"""The model graph: a module tree in the protocol's ``modelGraph/create`` payload.

Nodes are keyed by dotted module path (the root is ``"."``) and carry the module's type, its depth in the
tree (the root is 0), its order and the shapes of its own parameters. :func:`model_graph` describes a model
without running it (``order`` is the order of registration). :class:`GraphCapture` watches the model's
first forward pass instead: ``order`` is then the order in which modules were first called, and ``edges``
say which module's output reached which module, through identical tensors or, with autograd on, through
the functional operations between them (at most a few dozen autograd nodes back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

import torch

__all__ = ["GraphCapture", "is_compiled", "model_graph", "module_key", "no_trace", "unwrap"]

logger = logging.getLogger(__name__)

#: Wrappers whose module path parts are left out of names (FSDP, activation checkpointing, torch.compile).
_WRAPPER_PARTS: Final = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
#: How many autograd nodes an edge search walks back from one input.
_EDGE_SEARCH: Final = 64
#: How deep nested outputs (tuples, dicts, dataclass-like outputs) are searched for tensors.
_NEST: Final = 4


#: ``torch.compiler.disable``: a hook wrapped in it runs eagerly, never traced into a compiled graph.
no_trace: Any = torch.compiler.disable


def is_compiled(model: Any) -> bool:
    """Whether ``model`` is what ``torch.compile`` returns for a module."""
    return isinstance(getattr(model, "_orig_mod", None), torch.nn.Module)


def unwrap(model: Any) -> Any:
    """The user's module inside DistributedDataParallel, DataParallel or ``torch.compile`` wrappers."""
    for _ in range(8):
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, torch.nn.Module):
            model = inner
            continue
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
            continue
        break
    return model


def module_key(name: str) -> str:
    """A dotted module or parameter path without the parts that wrappers insert; ``"."`` for the root."""
    parts = [p for p in name.split(".") if p and p not in _WRAPPER_PARTS]
    return ".".join(parts) or "."


def _depth(key: str) -> int:
    return 0 if key == "." else key.count(".") + 1


def _node(key: str, module: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": type(module).__name__, "depth": _depth(key)}
    params = {
        module_key(name): list(p.shape) for name, p in module.named_parameters(recurse=False) if p is not None
    }
    if params:
        node["params"] = params
    return node


def _modules(model: Any) -> Iterator[tuple[str, Any]]:
    """Each distinct module once, keyed by its cleaned path (a wrapper shares its child's key: skipped)."""
    seen: set[str] = set()
    for name, module in model.named_modules():
        key = module_key(name)
        if key not in seen:
            seen.add(key)
            yield key, module


def model_graph(model: Any) -> dict[str, Any]:
    """The graph payload of ``model`` without running it: ``{"format": "torch", "nodes": {...}}``."""
    model = unwrap(model)
    nodes = {}
    for order, (key, module) in enumerate(_modules(model)):
        nodes[key] = {**_node(key, module), "order": order}
    return {"format": "torch", "nodes": nodes}


def _tensors(value: Any, depth: int = 0) -> Iterator[Any]:
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < _NEST:
        if isinstance(value, (list, tuple)):
            items: Any = value
        elif isinstance(value, dict):
            items = value.values()
        else:
            return
        for item in items:
            yield from _tensors(item, depth + 1)


class GraphCapture:
    """Hooks that record the first forward pass of ``model`` and hand its graph to ``done``, then go away.

    Args:
        model: the (unwrapped) module.
        done: called once with the graph payload, from inside the forward pass.
    """

    def __init__(self, model: Any, done: Callable[[dict[str, Any]], None]) -> None:
        self._model = model
        self._done = done
        self._handles: list[Any] = []
        self._keys: dict[int, str] = {}
        self._leaves: set[str] = set()
        self._reset()
        for key, module in _modules(model):
            self._keys[id(module)] = key
            if not any(True for _ in module.children()):
                self._leaves.add(key)
            # Outside torch.compile's tracing: the hooks look at real tensors and their autograd nodes.
            before, after = no_trace(self._before), no_trace(self._after)
            self._handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            self._handles.append(module.register_forward_hook(after, with_kwargs=True))

    def _reset(self) -> None:
        self._order: dict[str, int] = {}
        self._edges: dict[tuple[str, str], None] = {}
        self._by_tensor: dict[int, tuple[Any, str]] = {}
        self._by_fn: dict[Any, str] = {}

    @property
    def hooks(self) -> int:
        """How many hooks are attached: two per module until the first forward pass ends, then none."""
        return len(self._handles)

    def remove(self) -> None:
        """Detach every hook and drop what was recorded."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._reset()

    def _before(self, module: Any, args: Any, kwargs: Any) -> None:
        try:
            key = self._keys.get(id(module))
            if key is None:
                return
            if key == ".":
                self._reset()  # a forward that failed half-way left partial records
            self._order.setdefault(key, len(self._order))
            if key in self._leaves:
                for tensor in _tensors([args, kwargs]):
                    for source in self._sources(tensor):
                        if source != key:
                            self._edges[(source, key)] = None
        except Exception:  # broad: recording the graph must never break the user's forward pass
            logger.exception("mlop-torch could not record the model graph")
            self.remove()

    def _after(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        try:
            key = self._keys.get(id(module))
            if key is None:
                return
            if key in self._leaves:
                for tensor in _tensors(output):
                    # Tensors are kept until the pass ends, so their ids cannot be reused meanwhile.
                    self._by_tensor.setdefault(id(tensor), (tensor, key))
                    if tensor.grad_fn is not None:
                        self._by_fn.setdefault(tensor.grad_fn, key)
            if key == ".":
                graph = {"format": "torch", "nodes": self._nodes()}
                self.remove()
                self._done(graph)
        except Exception:  # broad: as above
            logger.exception("mlop-torch could not record the model graph")
            self.remove()

    def _sources(self, tensor: Any) -> list[str]:
        """The leaf modules whose outputs ``tensor`` was computed from, nearest first."""
        known = self._by_tensor.get(id(tensor))
        if known is not None and known[0] is tensor:
            return [known[1]]
        found: list[str] = []
        stack = [tensor.grad_fn] if tensor.grad_fn is not None else []
        seen: set[int] = set()
        while stack and len(seen) < _EDGE_SEARCH:
            fn = stack.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            source = self._by_fn.get(fn)
            if source is not None:
                found.append(source)
                continue
            stack.extend(next_fn for next_fn, _ in getattr(fn, "next_functions", ()))
        return found

    def _nodes(self) -> dict[str, dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = {}
        for key, module in _modules(self._model):
            node = _node(key, module)
            if key in self._order:
                node["order"] = self._order[key]
            edges = [[src, dst] for src, dst in self._edges if src == key]
            if edges:
                node["edges"] = edges
            nodes[key] = node
        return nodes
