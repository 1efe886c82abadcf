"""``mlop.Graph``: nodes and edges with attributes (a knowledge graph, a molecule, a state machine)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from mlop._data._common import check_json
from mlop._loggable import Items, Loggable, MediaSink

__all__ = ["Graph"]

_WHAT: Final = "mlop.Graph"
DATA_TYPE: Final = "GRAPH"


def _node_id(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{_WHAT}: {where} must be a str or an int, not {type(value).__name__}")
    return value


def _attrs(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{_WHAT}: the attributes of {where} must be a dict, not {type(value).__name__}")
    out = {str(k): v for k, v in value.items()}
    return dict(check_json(out, f"{_WHAT}: the attributes of {where}"))


class Graph(Loggable):
    """A graph, sent to the server as data (``dataType`` ``GRAPH``, registered as the ``DATA`` type: the
    protocol has no graph type).

    Args:
        nodes: node ids (str or int), ``(id, attributes)`` pairs, or a dict from id to attributes; or a
            networkx graph, whose nodes, edges, attributes and direction are taken.
        edges: ``(source, target)`` or ``(source, target, attributes)``; every end must be a node (nodes
            named only by edges are added when ``nodes`` is None).
        directed: whether edges have a direction.
        attributes: JSON-safe values about the whole graph.

    The payload is ``{"nodes": [{"id", ...attributes}], "edges": [{"source", "target", ...attributes}],
    "directed", "attributes", "type": "Graph", "v": 1}``.

    Raises:
        ValueError: an edge names a node the graph does not have, or a node is listed twice.
        TypeError: an id that is neither str nor int, attributes that are not JSON-safe.
    """

    log_type: ClassVar[str] = "DATA"

    def __init__(
        self,
        nodes: Any = None,
        edges: Iterable[Any] | None = None,
        *,
        directed: bool = True,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        if hasattr(nodes, "is_directed") and hasattr(nodes, "edges") and edges is None:
            graph = nodes
            directed = bool(graph.is_directed())
            nodes = dict(graph.nodes(data=True))
            edges = list(graph.edges(data=True))
            attributes = {**dict(getattr(graph, "graph", {}) or {}), **dict(attributes or {})}
        self.directed = bool(directed)
        self.attributes = _attrs(attributes, "the graph")
        self.nodes: dict[str | int, dict[str, Any]] = {}
        implicit = nodes is None
        if isinstance(nodes, Mapping):
            for node_id, attrs in nodes.items():
                self._add_node(node_id, attrs)
        elif nodes is not None:
            for entry in nodes:
                if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[1], Mapping):
                    self._add_node(entry[0], entry[1])
                else:
                    self._add_node(entry, None)
        self.edges: list[tuple[str | int, str | int, dict[str, Any]]] = []
        for number, edge in enumerate(edges or ()):
            if not isinstance(edge, (tuple, list)) or len(edge) not in (2, 3):
                raise TypeError(f"{_WHAT}: edge {number} must be (source, target) or (source, target, attrs)")
            source = _node_id(edge[0], f"the source of edge {number}")
            target = _node_id(edge[1], f"the target of edge {number}")
            for end in (source, target):
                if end not in self.nodes:
                    if not implicit:
                        raise ValueError(f"{_WHAT}: edge {number} names {end!r}, which is not a node")
                    self.nodes[end] = {}
            self.edges.append((source, target, _attrs(edge[2] if len(edge) == 3 else None, f"edge {number}")))

    def _add_node(self, node_id: Any, attrs: Any) -> None:
        key = _node_id(node_id, "a node id")
        if key in self.nodes:
            raise ValueError(f"{_WHAT}: the node {key!r} is listed twice")
        self.nodes[key] = _attrs(attrs, f"node {key!r}")

    def to_dict(self) -> dict[str, Any]:
        """The graph's payload (see the class docstring)."""
        return {
            "nodes": [{**attrs, "id": node_id} for node_id, attrs in self.nodes.items()],
            "edges": [{**attrs, "source": s, "target": t} for s, t, attrs in self.edges],
            "directed": self.directed,
            "attributes": dict(self.attributes),
            "type": "Graph",
            "v": 1,
        }

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """One ``data`` item with the payload of :meth:`to_dict`."""
        return [("data", (step, time, key, DATA_TYPE, self.to_dict()))]
