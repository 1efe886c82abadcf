"""mlop_torch: gradients, parameters, the model graph and tensors of PyTorch models for mlop.

Installed, it answers mlop-core's hooks on its own: ``run.watch(model)`` works on any ``torch.nn.Module``,
``run.log`` takes tensors, and ``mlop.init()`` knows its rank under ``torch.distributed``.

>>> run = mlop.init(project="demo")
>>> run.watch(model, log="all", log_freq=100)
"""

from __future__ import annotations

from typing import Any

from mlop_torch._version import __version__

__all__ = ["__version__", "model_graph", "watch"]


def watch(
    model: Any, log: str | None = "gradients", log_freq: int = 1000, log_graph: bool = True, bins: int = 64
) -> Any:
    """Watch ``model`` in the newest run; the same as ``mlop.watch`` (see :meth:`mlop.Run.watch`)."""
    import mlop

    return mlop.watch(model, log=log, log_freq=log_freq, log_graph=log_graph, bins=bins)


def model_graph(model: Any) -> dict[str, Any]:
    """The graph payload (``{"format": "torch", "nodes": {...}}``) of a module, without running it."""
    from mlop_torch._graph import model_graph as graph

    return graph(model)
