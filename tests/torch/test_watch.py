"""``run.watch``: gradient and parameter histograms, their schedule, NaN counting, unwatch and faults."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim import optimizer as optimizer_module

import mlop
from mlop_torch import _watch

BINS = 16


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.act = torch.nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.body = torch.nn.Sequential(Block(), Block())
        self.head = torch.nn.Linear(8, 2, bias=False)
        self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(self.embed(x))))


PARAMS = [
    "embed.weight",
    "embed.bias",
    "body.0.fc.weight",
    "body.0.fc.bias",
    "body.1.fc.weight",
    "body.1.fc.bias",
    "head.weight",
]


def histc(tensor: torch.Tensor) -> list[int]:
    finite = tensor.detach().reshape(-1)
    finite = finite[torch.isfinite(finite)]
    return [int(c) for c in torch.histc(finite, BINS)]


def train(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: Any, steps: int, poison: int | None = None
) -> list[dict[str, dict[str, torch.Tensor]]]:
    """The usual loop, logging after the optimizer step; returns what each step's optimizer saw."""
    seen = []
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(16, 4, generator=generator)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if step == poison:
            model.body[0].fc.weight.grad[0, 0] = float("nan")  # type: ignore[index]
        seen.append(
            {
                "grad": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                "param": {n: p.detach().clone() for n, p in model.named_parameters()},
            }
        )
        optimizer.step()
        run.log({"loss": loss.item()})
    return seen


def data(run_dir: Path, key: str) -> list[dict[str, Any]]:
    return list(mlop.open_run(run_dir).data(key))


def test_histograms_match_histc_at_the_expected_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(model, log="all", log_freq=3, bins=BINS)
    seen = train(model, optimizer, run, steps=8)
    run.finish()

    # Optimizer steps 0, 3 and 6 are logged, each with the values the user logs right after it.
    expected_steps = {0: 0, 3: 3, 6: 6}
    for kind in ("grad", "param"):
        for name in PARAMS:
            rows = data(run.dir, f"{kind}/{name}")
            assert [r["step"] for r in rows] == list(expected_steps.values()), (kind, name)
            for row, optimizer_step in zip(rows, expected_steps, strict=True):
                tensor = seen[optimizer_step][kind][name]
                value = row["value"]
                assert row["type"] == "HISTOGRAM"
                assert value["freq"] == histc(tensor)
                assert value["bins"]["num"] == BINS
                assert value["bins"]["min"] == pytest.approx(tensor.min().item())
                assert value["bins"]["max"] == pytest.approx(tensor.max().item())
    # Frozen parameters (no gradient, no change) and the user's own keys are left alone.
    keys = {r["key"] for r in mlop.open_run(run.dir).data()}
    assert keys == {f"{kind}/{name}" for kind in ("grad", "param") for name in PARAMS}
    counts = [r for r in mlop.open_run(run.dir).metrics() if r["key"].endswith("/nonfinite")]
    assert {r["key"] for r in counts} == {f"grad/{n}/nonfinite" for n in PARAMS}
    assert {r["value"] for r in counts} == {0}
    assert [r["step"] for r in mlop.open_run(run.dir).metrics("loss")] == list(range(8))


def test_gradients_only_by_default_in_one_record_per_step(tmp_path: Path) -> None:
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    mlop.watch(model, log_freq=2, log_graph=False)
    run.log({"before": 1.0})  # the first step logged by the user: histograms now land at its step
    train(model, optimizer, run, steps=4)
    run.finish()
    rows = list(mlop.open_run(run.dir).data())
    assert {r["key"].split("/")[0] for r in rows} == {"grad"}
    assert sorted({r["step"] for r in rows}) == [1, 3]
    assert all(r["value"]["bins"]["num"] == 64 for r in rows)
    # One store item per record: every histogram of a step shares the record's time.
    assert len({(r["step"], r["time"]) for r in rows}) == 2


def test_a_nan_gradient_shows_up_in_the_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(model, log="gradients", log_freq=1, bins=BINS, log_graph=False)
    with caplog.at_level(logging.ERROR):
        seen = train(model, optimizer, run, steps=3, poison=1)
    run.finish()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    rows = data(run.dir, "grad/body.0.fc.weight")
    poisoned = seen[1]["grad"]["body.0.fc.weight"]
    assert torch.isnan(poisoned).sum() == 1
    assert rows[1]["value"]["freq"] == histc(poisoned)
    assert sum(rows[1]["value"]["freq"]) == poisoned.numel() - 1
    counts = [
        (r["step"], r["value"]) for r in mlop.open_run(run.dir).metrics("grad/body.0.fc.weight/nonfinite")
    ]
    # The NaN reached the weights through the optimizer step: at step 2 every gradient of the layer is NaN.
    assert counts == [(0, 0), (1, 1), (2, 64)]
    assert rows[2]["value"]["freq"] == [0] * BINS


def test_several_models_at_once_each_on_its_own_optimizer(tmp_path: Path) -> None:
    generator, critic = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(critic.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.log({"start": 0})
    run.watch(generator, log_freq=1, log_graph=False)
    run.watch(critic, log_freq=2, log_graph=False)
    for _ in range(3):
        critic(generator(torch.randn(2, 3))).sum().backward()
        opt_c.step()
        opt_g.step()
        run.log({"x": 1.0})
    run.finish()
    # The second model's names would collide with the first's: it is numbered.
    assert [r["step"] for r in data(run.dir, "grad/weight")] == [1, 2, 3]
    assert [r["step"] for r in data(run.dir, "grad/model1.weight")] == [1, 3]


def test_unwatch_removes_every_hook(tmp_path: Path) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    global_hooks = dict(optimizer_module._global_optimizer_pre_hooks)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(model, log="all", log_freq=1)
    assert handle.hooks > 1
    train(model, optimizer, run, steps=2)
    handle_two = run.watch(model, log="parameters", log_freq=1)  # replaces the first watch
    assert handle.hooks == 0 and handle_two.hooks > 1 and handle_two.names == PARAMS
    run.unwatch(model)
    assert handle.hooks == 0 and handle_two.hooks == 0
    assert dict(optimizer_module._global_optimizer_pre_hooks) == global_hooks
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
    for parameter in model.parameters():
        assert not parameter._backward_hooks
    train(model, optimizer, run, steps=3)
    run.finish()
    rows = list(mlop.open_run(run.dir).data())
    assert len(rows) == 2 * 2 * len(PARAMS)  # two steps of gradients and parameters, none after unwatch
    assert sorted({r["step"] for r in rows}) == [0, 1]
    assert mlop.open_run(run.dir).graph is not None  # the first watch's graph, from its first forward


def test_finish_removes_the_hooks_too(tmp_path: Path) -> None:
    model = Net()
    global_hooks = dict(optimizer_module._global_optimizer_pre_hooks)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(model, log="all", log_freq=1)
    run.finish()
    assert handle.hooks == 0
    assert dict(optimizer_module._global_optimizer_pre_hooks) == global_hooks


def test_a_failing_histogram_never_reaches_the_training_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(tensors: Any, bins: int) -> Any:
        raise RuntimeError("device fell over")

    monkeypatch.setattr(_watch, "histograms", broken)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(model, log="all", log_freq=1)
    before = [p.detach().clone() for p in model.parameters()]
    train(model, optimizer, run, steps=2)
    run.finish()
    assert len([r for r in caplog.records if "device fell over" in (r.exc_text or "")]) == 1  # once
    assert handle.failures == 2
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    assert [r["step"] for r in mlop.open_run(run.dir).metrics("loss")] == [0, 1]


def test_wrong_arguments_raise_at_once(tmp_path: Path) -> None:
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="log="):
        run.watch(model, log="weights")
    with pytest.raises(ValueError, match="log_freq"):
        run.watch(model, log_freq=0)
    with pytest.raises(ValueError, match="bins"):
        run.watch(model, bins=0)
    with pytest.raises(mlop.PluginError, match="mlop-torch"):
        run.watch(object())


def test_the_original_clients_arguments(tmp_path: Path) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.log({"start": 0})
    handle = run.watch(model, freq=2, disable_grad=True, disable_graph=True)
    assert handle.parameters and not handle.gradients and handle.log_freq == 2
    train(model, optimizer, run, steps=3)
    run.finish()
    assert {r["key"].split("/")[0] for r in mlop.open_run(run.dir).data()} == {"param"}
    assert mlop.open_run(run.dir).graph is None


def test_histograms_of_half_precision_and_a_constant_tensor() -> None:
    from mlop_torch._histogram import histograms

    half = torch.randn(100).to(torch.bfloat16)
    constant = torch.full((5,), 2.0)
    empty = torch.empty(0)
    infinite = torch.tensor([1.0, float("inf"), float("-inf"), 3.0])
    meta = torch.empty(4, device="meta")
    out = histograms([half, constant, empty, infinite, meta], BINS)
    assert out[4] is None
    assert out[0] is not None and list(out[0].counts) == histc(half.float())
    assert out[1] is not None and out[1].counts.sum() == 5 and out[1].edges[0] == 1.5
    assert out[2] is None
    assert out[3] is not None and (out[3].nan, out[3].inf) == (0, 2) and out[3].counts.sum() == 2
    np.testing.assert_allclose(out[3].edges[[0, -1]], [1.0, 3.0])


@pytest.mark.parametrize("bins", [1, 7, 64, 100, 255, 256, 300])
def test_cpu_counts_equal_histc_bin_for_bin(bins: int) -> None:
    from mlop_torch._histogram import histograms

    generator = torch.Generator().manual_seed(bins)
    tensors = [
        torch.randn(50_000, generator=generator) * 1e-20,
        torch.randn(50_000, generator=generator) * 1e20,
        torch.linspace(-1, 1, 10_001),  # values on bin edges
        torch.randint(-5, 6, (50_000,), generator=generator).float() * 0.1,  # many ties
        torch.rand(50_000, generator=generator) * 3 + 1e6,  # coarse float32 spacing
        torch.randn(50_000, generator=generator, dtype=torch.float64),
        torch.randn(300_001, generator=generator) ** 3,  # over one chunk, odd: its last value counted alone
    ]
    for tensor, result in zip(tensors, histograms(tensors, bins), strict=True):
        assert result is not None
        expected = torch.histc(tensor, bins, float(result.edges[0]), float(result.edges[-1]))
        assert result.counts.tolist() == [int(c) for c in expected]
        assert result.counts.sum() == tensor.numel()


def test_logging_before_the_optimizer_step_keeps_histograms_at_that_step(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(model, log_freq=2, log_graph=False)
    for step in range(5):
        loss = model(torch.randn(4, 3)).sum()
        optimizer.zero_grad()
        loss.backward()
        run.log({"loss": loss.item()}, step=10 + step)  # logged before the optimizer step, explicit steps
        optimizer.step()
    run.finish()
    assert [r["step"] for r in data(run.dir, "grad/weight")] == [10, 12, 14]
    assert [r["step"] for r in mlop.open_run(run.dir).metrics("loss")] == [10, 11, 12, 13, 14]


def test_gradients_under_a_grad_scaler_are_unscaled(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(model, log_freq=1, bins=BINS, log_graph=False)
    x = torch.randn(8, 4)
    expected = torch.autograd.grad(model(x).pow(2).mean(), model.weight)[0]
    optimizer.zero_grad()
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(optimizer)
    scaler.update()
    run.log({"loss": 0.0})
    run.finish()
    (row,) = data(run.dir, "grad/weight")
    assert row["value"]["freq"] == histc(expected)
    assert row["value"]["bins"]["max"] == pytest.approx(expected.max().item())


def test_a_compiled_model_is_watched_under_its_own_names(tmp_path: Path) -> None:
    model = Net()
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(compiled, log_freq=1)
    assert handle.names == PARAMS
    compiled(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    run.log({"loss": 0.0})
    run.finish()
    reader = mlop.open_run(run.dir)
    assert {r["key"] for r in reader.data()} == {f"grad/{n}" for n in PARAMS}
    assert reader.graph is not None and "body.0.fc" in reader.graph["nodes"]


@pytest.fixture
def one_torch_thread() -> Any:
    """Torch on one thread of a machine with two CPUs or more: a CPU is left for mlop's workers."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("counting on a background worker needs a second CPU")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Wide(torch.nn.Module):
    """Two weights larger than what is counted at the logging step itself, and small biases."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(256, 160)
        self.out = torch.nn.Linear(160, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc(x)))


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("freq", [2, 17])  # copies reused from step to step, and fresh ones
def test_large_cpu_tensors_are_counted_in_the_background_at_their_step(tmp_path: Path, freq: int) -> None:
    torch.manual_seed(0)
    model = Wide()
    assert model.fc.weight.numel() > _watch.INLINE >= model.fc.bias.numel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = run.watch(model, log="all", log_freq=freq, bins=BINS, log_graph=False)
    generator = torch.Generator().manual_seed(0)
    logged = [0, freq, 2 * freq]
    seen = {}
    for step in range(2 * freq + 2):
        loss = model(torch.randn(32, 256, generator=generator)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if step == freq:
            model.fc.weight.grad[:2, :3] = float("nan")  # type: ignore[index]
            model.fc.weight.grad[5, 5] = float("-inf")  # type: ignore[index]
        if step in logged:
            seen[step] = {
                "grad": {n: p.grad.clone() for n, p in model.named_parameters()},  # type: ignore[union-attr]
                "param": {n: p.detach().clone() for n, p in model.named_parameters()},
            }
        optimizer.step()
        with torch.no_grad():
            model.fc.weight.nan_to_num_(0.0, 0.0, 0.0)  # keep the NaN out of the following steps
        run.log({"loss": loss.item()})
    assert handle._later is not None  # the weights did go to the workers
    run.finish()  # waits for the workers: nothing of the last logging step is missing

    names = ["fc.weight", "fc.bias", "out.weight", "out.bias"]
    for kind in ("grad", "param"):
        for name in names:
            rows = data(run.dir, f"{kind}/{name}")
            assert [r["step"] for r in rows] == logged, (kind, name)
            for row in rows:
                tensor = seen[row["step"]][kind][name]
                assert row["value"]["freq"] == histc(tensor), (kind, name, row["step"])
    stored = mlop.open_run(run.dir)
    poisoned = [(r["step"], r["value"]) for r in stored.metrics("grad/fc.weight/nonfinite")]
    assert poisoned == [(0, 0), (freq, 7), (2 * freq, 0)]
    clean = [(r["step"], r["value"]) for r in stored.metrics("grad/out.bias/nonfinite")]
    assert clean == [(0, 0), (freq, 0), (2 * freq, 0)]
    assert not [r for r in stored.metrics() if r["key"].startswith("param/")]
    assert [r["step"] for r in stored.metrics("loss")] == list(range(2 * freq + 2))


@pytest.mark.usefixtures("one_torch_thread")
def test_every_step_keeps_its_own_counts_when_the_workers_fall_behind(tmp_path: Path) -> None:
    # A 4M-value weight changed every step and logged every step, with steps far cheaper than counting:
    # each copy is reused as soon as (and not before) its previous histogram is counted.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(2048, 2048, generator=generator))
    direction = torch.randn(2048, 2048, generator=generator)
    optimizer = torch.optim.SGD([weight], lr=0.5)
    module = torch.nn.Module()
    module.weight = weight
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.watch(module, log="all", log_freq=1, bins=BINS, log_graph=False)
    seen = []
    for step in range(12):
        weight.grad = direction * (step % 3 - 1.0) + step  # a different distribution every step
        seen.append((weight.grad.clone(), weight.detach().clone()))
        optimizer.step()
        run.log({"step": step})
    run.finish()
    grads, params = data(run.dir, "grad/weight"), data(run.dir, "param/weight")
    assert [r["step"] for r in grads] == [r["step"] for r in params] == list(range(12))
    for (grad, param), grad_row, param_row in zip(seen, grads, params, strict=True):
        assert grad_row["value"]["freq"] == histc(grad)
        assert param_row["value"]["freq"] == histc(param)


def test_the_accelerator_path_counts_with_histc(monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: CPU tensors are sent down the branch that CUDA tensors take (aminmax, the non-finite
    # values set apart, torch.histc, one copy of the counts), which is all of that path but the device.
    from mlop_torch import _histogram

    monkeypatch.setattr(_histogram, "ARITHMETIC_DEVICES", frozenset())
    monkeypatch.setattr(_histogram, "_cpu_counts", None)  # the CPU's own counting must not run
    generator = torch.Generator().manual_seed(3)
    plain = torch.randn(5_000, generator=generator)
    poisoned = torch.randn(5_000, generator=generator)
    poisoned[[3, 9]] = float("nan")
    poisoned[7] = float("inf")
    constant = torch.full((10,), -2.0)
    out = _histogram.histograms([plain, poisoned, constant], BINS)
    assert out[0] is not None and out[0].counts.tolist() == histc(plain) and out[0].nonfinite == 0
    assert out[1] is not None and out[1].counts.tolist() == histc(poisoned)
    assert (out[1].nan, out[1].inf) == (2, 1)
    assert out[2] is not None and out[2].counts.sum() == 10 and out[2].edges[0] == -2.5
