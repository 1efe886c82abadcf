"""Tensors as logged values and data types, and the rank from ``torch.distributed``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import mlop
import mlop_torch
from mlop import _hooks


def test_tensors_are_logged_as_numbers(tmp_path: Path) -> None:
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    weight = torch.nn.Parameter(torch.tensor([2.5]))
    run.log(
        {
            "zero_d": torch.tensor(1.5),
            "one": torch.tensor([[3]]),
            "grad": weight * 2,  # requires grad
            "half": torch.tensor([0.5], dtype=torch.bfloat16),
            "flag": torch.tensor([True]),
        }
    )
    run.finish()
    values = {r["key"]: r["value"] for r in mlop.open_run(run.dir).metrics(system=False)}
    assert values == {"zero_d": 1.5, "one": 3, "grad": 5.0, "half": 0.5, "flag": 1}


def test_tensors_in_data_types(tmp_path: Path) -> None:
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    values = torch.randn(1000, requires_grad=True) * 1
    image = torch.rand(3, 8, 6)
    run.log(
        {
            "hist": mlop.Histogram(values, bins=10),
            "image": mlop.Image(image),
            "image_hwc": mlop.Image(image.permute(1, 2, 0)),
            "audio": mlop.Audio(torch.sin(torch.linspace(0, 100, 800)), rate=8000),
            "video": mlop.Video((torch.rand(4, 3, 16, 16) * 255).to(torch.uint8), fps=4),  # T, C, H, W
        }
    )
    run.finish()
    reader = mlop.open_run(run.dir)
    (hist,) = reader.data("hist")
    expected, _ = np.histogram(values.detach().numpy(), bins=10)
    assert hist["value"]["freq"] == expected.tolist()
    media = {m["key"]: m for m in reader.media()}
    assert set(media) == {"image", "image_hwc", "audio", "video"}
    assert media["video"]["frames"] == 4 and media["video"]["fileType"] == "mp4"
    from PIL import Image

    with Image.open(media["image"]["path"]) as png:
        assert png.size == (6, 8)
        pixels = np.asarray(png)
    np.testing.assert_array_equal(pixels, np.rint(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def test_the_convert_hook_answers_only_for_tensors() -> None:
    assert _hooks.convert(object()) is None
    assert _hooks.convert(np.zeros(3)) is None
    array = _hooks.convert(torch.arange(6).reshape(2, 3).to(torch.float16))
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.shape == (2, 3)
    sparse = torch.eye(3).to_sparse()
    np.testing.assert_array_equal(_hooks.convert(sparse), np.eye(3))
    assert _hooks.convert(torch.tensor([7])) == 7


def test_the_rank_comes_from_the_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not dist.is_initialized()
    from mlop_torch.plugin import mlop_rank

    assert mlop_rank() is None  # no group: the environment answers (core's fallback)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _hooks.rank() == mlop.RankInfo(rank=1, local_rank=0, world_size=2)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        monkeypatch.setenv("RANK", "3")  # the process group knows better than a stale variable
        assert _hooks.rank() == mlop.RankInfo(rank=0, local_rank=0, world_size=1)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        monkeypatch.delenv("RANK")
        run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
        handle = run.watch(model, log="all", log_freq=1, log_graph=True)
        assert handle.names == ["0.weight", "0.bias"]  # no "module." prefix
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.randn(4, 2)).sum().backward()
        optimizer.step()
        run.log({"loss": 1.0})
        run.finish()
        reader = mlop.open_run(run.dir)
        assert reader.meta["rank"] == {"rank": 0, "local_rank": 0, "world_size": 1}
        assert {r["key"] for r in reader.data()} == {
            "grad/0.weight",
            "grad/0.bias",
            "param/0.weight",
            "param/0.bias",
        }
        assert reader.graph is not None and list(reader.graph["nodes"]) == [".", "0"]
    finally:
        dist.destroy_process_group()


def test_the_package_surface() -> None:
    own = {
        name
        for name, value in vars(mlop_torch).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("mlop_torch")
    }
    assert sorted(mlop_torch.__all__) == mlop_torch.__all__
    assert set(mlop_torch.__all__) - {"__version__"} == own
    assert mlop_torch.__version__


def test_mlop_torch_watch_uses_the_newest_run(tmp_path: Path) -> None:
    run = mlop.init(project="t", dir=tmp_path, disable_system_metrics=True, disable_console=True)
    handle = mlop_torch.watch(torch.nn.Linear(2, 2), log="parameters", log_freq=5)
    assert handle.parameters and handle.log_freq == 5
    run.finish()
    assert handle.hooks == 0


def test_a_program_without_torch_never_imports_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlop\n"
        "run = mlop.init(project='t', disable_system_metrics=True, disable_console=True)\n"
        "run.log({'x': 1})\n"
        "run.finish()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
