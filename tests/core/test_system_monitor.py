"""The system monitor: real psutil readings under ``sys/``, on their own step counter."""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import mlop


def _sys_rows(run: Any) -> dict[str, list[tuple[int, Any]]]:
    reader = mlop.open_run(run.dir)
    try:
        rows: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for row in reader.metrics():
            if row["key"].startswith("sys/"):
                rows[row["key"]].append((row["step"], row["value"]))
        return rows
    finally:
        reader.close()


def _wait_for_samples(run: Any, count: int) -> None:
    """Wait (bounded) until the monitor has handed ``count`` samples to the writer; no timing asserted."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run._writer.flush()
        reader = mlop.open_run(run.dir)
        try:
            steps = {row["step"] for row in reader.metrics() if row["key"] == "sys/memory.used"}
        finally:
            reader.close()
        if len(steps) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} system samples after 30 s")


def test_a_short_run_records_real_machine_and_process_values(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1)
    blob = bytearray(64 * 1024 * 1024)  # the process holds at least this much while it is sampled
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1)})
    _wait_for_samples(run, 3)
    run.finish()
    del blob
    rows = _sys_rows(run)

    import psutil

    cores = psutil.cpu_count(logical=True)
    total_memory = psutil.virtual_memory().total
    for key in (
        "sys/cpu.percentage",
        "sys/memory.used",
        "sys/memory.available",
        "sys/memory.percentage",
        "sys/memory.swap.used",
        "sys/disk.used",
        "sys/disk.percentage",
        "sys/process.cpu.percentage",
        "sys/process.memory.rss",
        "sys/process.threads",
        "sys/process.files.open",
    ):
        assert len(rows[key]) >= 3, key
    for index in range(cores or 1):
        assert rows[f"sys/cpu.percentage.{index}"], index
    assert f"sys/cpu.percentage.{cores}" not in rows
    for _step, value in rows["sys/cpu.percentage"] + rows["sys/memory.percentage"]:
        assert 0.0 <= value <= 100.0
    for _step, value in rows["sys/memory.used"]:
        assert 0 < value <= total_memory
    for _step, value in rows["sys/process.memory.rss"]:
        assert value >= 64 * 1024 * 1024
    # The writer, the monitor and the main thread at least.
    assert all(value >= 3 for _step, value in rows["sys/process.threads"])
    # Rates are differences between samples: present, never negative.
    for key in (
        "sys/disk.read_rate",
        "sys/disk.write_rate",
        "sys/network.sent_rate",
        "sys/network.received_rate",
    ):
        if psutil.disk_io_counters() is None and key.startswith("sys/disk"):
            continue
        assert rows[key] and all(value >= 0 for _step, value in rows[key]), key


def test_samples_have_their_own_step_counter_and_leave_the_user_steps_alone(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1)
    run.log({"loss": 1.0}, step=100)
    _wait_for_samples(run, 3)
    run.log({"loss": 0.5})
    run.finish()
    steps = [step for step, _value in _sys_rows(run)["sys/memory.used"]]
    assert steps == list(range(len(steps)))
    reader = mlop.open_run(run.dir)
    try:
        assert reader.progress()["steps"] == 2
        assert reader.progress()["last_step"] == 101
        assert [r["step"] for r in reader.metrics("loss")] == [100, 101]
        assert all(not r["key"].startswith("sys/") for r in reader.metrics(system=False))
    finally:
        reader.close()


def _monitor_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "mlop-system-monitor"}


@pytest.mark.parametrize(
    "settings",
    [{"x_sys_sampling_interval": 0}, {"disable_system_metrics": True, "x_sys_sampling_interval": 0.05}],
)
def test_the_monitor_can_be_turned_off(tmp_path: Path, settings: dict[str, Any]) -> None:
    before = _monitor_threads()  # a monitor another test's process left behind is not this run's
    run = mlop.init(dir=tmp_path, mode="offline", **settings)
    assert _monitor_threads() == before
    time.sleep(0.3)
    run.log({"loss": 1.0})
    run.finish()
    assert _sys_rows(run) == {}


def test_finish_wakes_the_monitor_instead_of_waiting_out_its_interval(tmp_path: Path) -> None:
    before = _monitor_threads()
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=3600)
    monitors = list(_monitor_threads() - before)
    assert len(monitors) == 1
    run.finish()
    # stop() joins for at most a few seconds: a sleeping thread would still be alive here.
    assert not monitors[0].is_alive()


def test_a_resumed_run_continues_the_sample_index(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1, run_id="again")
    _wait_for_samples(run, 2)
    run.finish()
    first = max(step for step, _value in _sys_rows(run)["sys/memory.used"])
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1, run_id="again", resume=True)
    _wait_for_samples(run, first + 3)
    run.finish()
    steps = [step for step, _value in _sys_rows(run)["sys/memory.used"]]
    assert steps == list(range(len(steps)))


def test_no_nvml_module_means_no_gpu_keys_and_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1)
    _wait_for_samples(run, 2)
    run.finish()
    assert run.status == "COMPLETED"
    assert not [k for k in _sys_rows(run) if k.startswith("sys/gpu")]
    assert mlop.open_run(run.dir).system["gpu"] == []
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_nvml_installed_without_a_driver_means_no_gpu_keys_and_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1)
    _wait_for_samples(run, 2)
    run.finish()
    assert not [k for k in _sys_rows(run) if k.startswith("sys/gpu")]
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_ranks_sharing_one_run_get_their_own_system_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1, shared=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _sys_rows(run):
        run._writer.flush()
        time.sleep(0.05)
    run.finish()
    keys = set(_sys_rows(run))
    assert "sys/rank1/memory.used" in keys and "sys/rank1/cpu.percentage.0" in keys
    assert all(key.startswith("sys/rank1/") for key in keys)


def test_a_group_psutil_cannot_read_is_warned_about_once_and_the_rest_still_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import psutil

    def hidden() -> Any:
        raise PermissionError("/proc/meminfo is hidden in this sandbox")

    monkeypatch.setattr(psutil, "virtual_memory", hidden)
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_sys_rows(run)["sys/cpu.percentage"]) < 3:
        run._writer.flush()
        time.sleep(0.05)
    run.finish()
    rows = _sys_rows(run)
    assert run.status == "COMPLETED"
    assert len(rows["sys/cpu.percentage"]) >= 3 and rows["sys/process.memory.rss"]
    assert not [key for key in rows if key.startswith("sys/memory.")]
    warnings = [r for r in caplog.records if "memory system metrics" in r.getMessage()]
    assert len(warnings) == 1
