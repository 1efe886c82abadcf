"""``mlop.compat.neptune`` against the real neptune-scale client.

No Neptune server is reachable here, so Neptune runs in its ``offline`` mode: it keeps every operation in
its local SQLite queue (what ``neptune sync`` would send later), which the tests read back to check that
the Neptune side got its values too. The mlop-only setting uses Neptune's ``disabled`` mode.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop

neptune_scale = pytest.importorskip("neptune_scale")
from neptune_scale.sync.operations_repository import OperationsRepository  # noqa: E402
from neptune_scale.types import File, Histogram  # noqa: E402

import mlop.compat.neptune as compat  # noqa: E402


@pytest.fixture(autouse=True)
def restore_neptune() -> Iterator[None]:
    yield
    compat.disable()


def _neptune_ops(base: Path) -> list[Any]:
    """Every operation Neptune queued for its server, from its offline store."""
    (path,) = base.glob(".neptune/*/run_operations.sqlite3")
    repo = OperationsRepository(db_path=path.resolve())
    try:
        return [op.operation for op in repo.get_operations(up_to_bytes=1 << 30)]
    finally:
        repo.close(cleanup_files=False)


def _neptune_metrics(ops: list[Any]) -> list[tuple[str, int, float, int]]:
    out = []
    for op in ops:
        for key, value in getattr(op, "append", {}).items():
            if value.HasField("float64"):
                ms = op.timestamp.seconds * 1000 + op.timestamp.nanos // 1_000_000
                out.append((key, op.step.whole, value.float64, ms))
    return out


def _run(base: Path) -> mlop.RunReader:
    (run,) = mlop.list_runs(base)
    return run


def _new_run(**kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "project": "acme/vision",
        "mode": "offline",
        "enable_console_log_capture": False,
        "source_tracking_config": None,
    }
    options.update(kwargs)
    return neptune_scale.Run(**options)


SCRIPT = textwrap.dedent(
    """
    from neptune_scale import Run
    from neptune_scale.types import Histogram

    run = Run(project="acme/vision", run_id="nep-1", experiment_name="exp-a", mode="offline")
    configs = {"parameters/lr": 0.01, "parameters/optimizer": "adam", "data": {"size": 10}}
    run.log_configs(configs, flatten=True)
    for step in range(5):
        run.log_metrics({"train/loss": 1.0 / (step + 1), "train/acc": step / 10}, step=step)
    run.log_string_series({"messages": "epoch done"}, step=4)
    run.log_histograms({"weights": Histogram(bin_edges=[0, 1, 2, 4], counts=[3, 5, 1])}, step=4)
    run.add_tags(["baseline", "resnet", "tmp"])
    run.remove_tags(["tmp"])
    run.assign_files({"config/raw": b"lr: 0.01"})
    run.close()
    """
)


def test_environment_variable_makes_an_unchanged_script_log_to_both(tmp_path: Path) -> None:
    """MLOP_NEPTUNE_COMPAT=1 and a script that never imports mlop (the start-up hook does)."""
    (tmp_path / "train.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "NEPTUNE_"))}
    env["MLOP_NEPTUNE_COMPAT"] = "1"
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

    run = _run(tmp_path)
    assert (run.project, run.id, run.name, run.status) == ("vision", "nep-1", "exp-a", "COMPLETED")
    assert run.config == {"parameters/lr": 0.01, "parameters/optimizer": "adam", "data/size": 10}
    assert run.tags == ["baseline", "resnet"]
    mlop_metrics = sorted((m["key"], m["step"], m["value"], m["time"]) for m in run.metrics(system=False))
    neptune_metrics = sorted(_neptune_metrics(_neptune_ops(tmp_path)))
    assert len(mlop_metrics) == 10
    assert mlop_metrics == neptune_metrics  # same keys, steps, values and times on both sides
    assert [(d["step"], d["value"]) for d in run.data("messages")] == [(4, "epoch done")]
    (hist,) = run.data("weights")
    assert hist["step"] == 4 and hist["value"]["freq"] == [3, 5, 1] and hist["value"]["bins"] == [0, 1, 2, 4]
    (raw,) = run.media("config/raw")
    assert Path(raw["path"]).read_bytes() == b"lr: 0.01"


def test_enable_mirrors_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    compat.enable(project="mirror")
    image = tmp_path / "plot.png"
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(image)
    run = _new_run(run_id="calls", experiment_name="exp")
    run.log_metrics({"loss": 0.5}, step=1.0)
    run.log_metrics({"loss": 0.4}, step=2.5)  # a fractional step: stored at its floor
    run.log_metrics({"loss": 0.3}, step=3, preview=True)  # a preview: Neptune replaces it, not mirrored
    run.log(step=4, metrics={"loss": 0.2}, configs={"legacy": True}, tags_add={"sys/tags": ["old-api"]})
    run.log_files(
        {"plots/curve": image, "logs/raw": File(source=b"x,y\n1,2\n", mime_type="text/csv")}, step=4
    )
    run.add_tags(["g"], group_tags=True)
    run.remove_tags(["old-api"])
    run.close()

    reader = _run(tmp_path)
    assert reader.project == "mirror" and reader.status == "COMPLETED"
    assert [(m["step"], m["value"]) for m in reader.metrics("loss")] == [(1, 0.5), (2, 0.4), (4, 0.2)]
    assert reader.config == {"legacy": True} and reader.tags == ["g"]
    (plot,) = reader.media("plots/curve")
    assert plot["type"] == "IMAGE" and plot["step"] == 4
    (csv,) = reader.media("logs/raw")
    assert csv["type"] == "FILE" and Path(csv["path"]).read_bytes() == b"x,y\n1,2\n"
    assert Path(csv["path"]).suffix == ".csv"


def test_terminate_and_exceptions_set_the_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    compat.enable(project="ends")
    _new_run(run_id="terminated").terminate()
    with pytest.raises(ValueError, match="diverged"), _new_run(run_id="failed") as run:
        run.log_metrics({"loss": float("nan")}, step=0)
        raise ValueError("diverged")
    status = {r.id: (r.status, (r.status_metadata or {}).get("message")) for r in mlop.list_runs(tmp_path)}
    assert status == {"terminated": ("TERMINATED", None), "failed": ("FAILED", "diverged")}


def test_an_mlop_failure_never_breaks_neptune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    compat.enable(project="not/a/valid/project")  # mlop.init refuses it
    with caplog.at_level(logging.WARNING, logger="mlop.compat.neptune"):
        run = _new_run(run_id="broken-mlop")
        run.log_metrics({"loss": 1.0}, step=0)
        run.close()
    assert "no mlop run for this Neptune run" in caplog.text
    assert [(k, s, v) for k, s, v, _t in _neptune_metrics(_neptune_ops(tmp_path))] == [("loss", 0, 1.0)]
    assert mlop.list_runs(tmp_path) == []

    # A failure in the middle of a call: Neptune still gets the value.
    compat.enable(project="half")
    run = _new_run(run_id="broken-call", log_directory=str(tmp_path / "second"))
    bridge = run.__dict__["_mlop_bridge"]
    monkeypatch.setattr(bridge.op, "update_config", lambda data: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="mlop.compat.neptune"):
        run.log_configs({"lr": 0.1})
    assert "could not log log_configs to mlop" in caplog.text
    run.log_metrics({"loss": 2.0}, step=0)
    run.close()
    assert _run(tmp_path).status == "COMPLETED"


def test_a_neptune_failure_never_breaks_mlop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    compat.enable(project="nep-fails")
    run = _new_run(run_id="broken-neptune")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(run, "_log", refuse)
    with pytest.raises(OSError, match="disk full"):  # Neptune's own error still reaches the script
        run.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(OSError):
        run.add_tags(["kept"])
    run.close()
    reader = _run(tmp_path)
    assert [(m["step"], m["value"]) for m in reader.metrics("loss")] == [(0, 1.0)]
    assert reader.tags == ["kept"] and reader.status == "COMPLETED"


def test_mlop_only_answers_neptune_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Neptune service is gone: no project, no token, no server; mlop gets everything."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOP_NEPTUNE_COMPAT", "mlop-only")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    compat.enable()
    run = neptune_scale.Run(run_id="only", enable_console_log_capture=False)  # async mode would need a token
    run.log_configs({"lr": 0.1})
    run.log_metrics({"loss": 0.5}, step=0)
    run.log_histograms({"h": Histogram(bin_edges=[0.0, 1.0], densities=[1.0])}, step=0)  # densities: skipped
    assert run.wait_for_processing(timeout=1) is True
    assert run.get_run_url() == str(tmp_path / ".mlop" / "default" / "only")
    with pytest.raises(TypeError):  # Neptune's own checks still apply
        run.log_metrics({"loss": 0.5}, step="one")
    run.close()
    assert not (tmp_path / ".neptune").exists()
    reader = _run(tmp_path)
    assert reader.config == {"lr": 0.1} and [m["value"] for m in reader.metrics("loss")] == [0.5]
    assert list(reader.data("h")) == []


def test_disable_restores_neptune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    original = neptune_scale.Run.log_metrics
    compat.enable()
    assert compat.is_enabled() and neptune_scale.Run.log_metrics is not original
    compat.disable()
    assert not compat.is_enabled() and neptune_scale.Run.log_metrics is original
    run = _new_run(run_id="plain")
    run.log_metrics({"loss": 1.0}, step=0)
    run.close()
    assert mlop.list_runs(tmp_path) == []


def test_the_mlop_run_takes_neptunes_generated_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEPTUNE_PROJECT", "acme/from-env")
    compat.enable()
    run = neptune_scale.Run(mode="offline", enable_console_log_capture=False, source_tracking_config=None)
    run.log_metrics({"loss": 1.0}, step=0)
    run.close()
    reader = _run(tmp_path)
    assert (reader.project, reader.id, reader.name) == ("from-env", run._run_id, run._run_id)
