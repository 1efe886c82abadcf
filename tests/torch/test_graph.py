"""The model graph: captured on the first forward pass, node by node, and described without a forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import mlop
import mlop_torch
from mlop_torch._graph import module_key


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.act = torch.nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            self.act(self.fc(x)) + x
        )  # a residual: fc's output reaches act; the input reaches the next block


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 2, bias=False)  # registered first, called last
        self.embed = torch.nn.Linear(4, 8)
        self.body = torch.nn.Sequential(Block(), Block())
        self.unused = torch.nn.Dropout()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(torch.relu(self.body(self.embed(x))))


EXPECTED: dict[str, dict[str, Any]] = {
    ".": {"type": "Net", "depth": 0, "order": 0},
    "head": {"type": "Linear", "depth": 1, "order": 9, "params": {"weight": [2, 8]}},
    "embed": {
        "type": "Linear",
        "depth": 1,
        "order": 1,
        "params": {"weight": [8, 4], "bias": [8]},
        # The residual connections carry embed's output past both blocks' layers.
        "edges": [["embed", "body.0.fc"], ["embed", "body.1.fc"], ["embed", "head"]],
    },
    "body": {"type": "Sequential", "depth": 1, "order": 2},
    "body.0": {"type": "Block", "depth": 2, "order": 3},
    "body.0.fc": {
        "type": "Linear",
        "depth": 3,
        "order": 4,
        "params": {"weight": [8, 8], "bias": [8]},
        "edges": [["body.0.fc", "body.0.act"]],
    },
    "body.0.act": {
        "type": "Tanh",
        "depth": 3,
        "order": 5,
        "edges": [["body.0.act", "body.1.fc"], ["body.0.act", "head"]],
    },
    "body.1": {"type": "Block", "depth": 2, "order": 6},
    "body.1.fc": {
        "type": "Linear",
        "depth": 3,
        "order": 7,
        "params": {"weight": [8, 8], "bias": [8]},
        "edges": [["body.1.fc", "body.1.act"]],
    },
    "body.1.act": {"type": "Tanh", "depth": 3, "order": 8, "edges": [["body.1.act", "head"]]},
    "unused": {"type": "Dropout", "depth": 1},
}


def test_the_graph_of_a_nested_model_node_by_node(tmp_path: Path) -> None:
    model = Net()
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(model, log=None)
    model(torch.randn(3, 4))
    assert handle.hooks == 0  # the capture detached itself after the first pass
    model.body.append(Block())  # a second pass of a changed model changes nothing
    model(torch.randn(3, 4))
    assert model.calls == 2  # no forward of its own
    run.finish()
    graph = mlop.open_run(run.dir).graph
    assert graph is not None and graph["format"] == "torch"
    assert list(graph["nodes"]) == list(EXPECTED)
    for key, node in EXPECTED.items():
        got = graph["nodes"][key]
        assert {k: v for k, v in got.items() if k != "order"} == {
            k: v for k, v in node.items() if k != "order"
        }
        assert got.get("order") == node.get("order"), key


def test_the_graph_without_a_forward_pass() -> None:
    graph = mlop_torch.model_graph(torch.nn.parallel.DataParallel(Net()))
    assert graph["format"] == "torch"
    assert [(k, n["order"]) for k, n in graph["nodes"].items()][:3] == [(".", 0), ("head", 1), ("embed", 2)]
    assert graph["nodes"]["body.1.fc"] == {
        "type": "Linear",
        "depth": 3,
        "order": 8,
        "params": {"weight": [8, 8], "bias": [8]},
    }
    assert mlop._hooks.graph(object()) is None


def test_a_failed_first_forward_is_recorded_again(tmp_path: Path) -> None:
    model = Net()
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(model, log=None)
    try:
        model(torch.randn(3, 5))  # the wrong width: fails inside embed
    except RuntimeError:
        pass
    with torch.no_grad():
        model(torch.randn(3, 4))
    run.finish()
    graph = mlop.open_run(run.dir).graph
    assert graph is not None
    assert graph["nodes"]["embed"]["order"] == 1
    # Without autograd, edges come from identical tensors only: embed's output is body.0.fc's input.
    assert graph["nodes"]["embed"]["edges"] == [["embed", "body.0.fc"]]


def test_wrapper_parts_leave_names() -> None:
    assert module_key("") == "."
    assert module_key("_orig_mod.layer._fsdp_wrapped_module.fc.weight") == "layer.fc.weight"
