"""GPU metrics through NVML.

This machine has no GPU, so these tests inject a FAKE ``pynvml`` module that stands in for NVML with two
identical devices. What is tested is mlop's side: the keys, the values, the units, how a device that fails
mid-run and a reading a device does not support are handled. Whether the real NVML returns these numbers is
nvidia-ml-py's business; ``bench/`` and a machine with a GPU cover the real path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import mlop

GIB = 1024**3


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _fake_nvml(fail_device_1_after: int, device_1_is_mig: bool = False) -> types.ModuleType:
    """A stand-in for pynvml: two identical 80 GiB GPUs; device 1 falls off the bus after N readings.

    With ``device_1_is_mig``, device 1 answers NOT_SUPPORTED for its utilisation, as a MIG-enabled board does.
    """
    nvml = types.ModuleType("pynvml")
    state: dict[str, Any] = {"reads": 0, "init": 0, "shutdown": 0}
    lock = threading.Lock()
    nvml.NVMLError = NVMLError  # type: ignore[attr-defined]
    nvml.NVML_ERROR_NOT_SUPPORTED = 3  # type: ignore[attr-defined]
    nvml.NVML_ERROR_GPU_IS_LOST = 15  # type: ignore[attr-defined]
    nvml.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    nvml.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    nvml.state = state  # type: ignore[attr-defined]

    def init() -> None:
        state["init"] += 1

    def shutdown() -> None:
        state["shutdown"] += 1

    def utilization(handle: int) -> Any:
        if handle == 1 and device_1_is_mig:
            raise NVMLError(3)
        if handle == 1:
            with lock:
                state["reads"] += 1
                if state["reads"] > fail_device_1_after:
                    raise NVMLError(15)
        return types.SimpleNamespace(gpu=40 + handle * 10, memory=5)

    def memory(handle: int) -> Any:
        return types.SimpleNamespace(total=80 * GIB, used=(20 + handle * 20) * GIB, free=0)

    def power_limit(handle: int) -> int:
        if handle == 0:
            raise NVMLError(3)  # device 0 does not report its power limit
        return 700_000

    def processes(handle: int) -> list[Any]:
        other = types.SimpleNamespace(pid=1, usedGpuMemory=GIB)
        if handle == 0:
            return [other, types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * GIB)]
        return [other]

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda handle: "NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: b"550.54.15"  # type: ignore[attr-defined]
    nvml.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetTemperature = lambda handle, sensor: 61 + handle  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetPowerUsage = lambda handle: 350_500  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetEnforcedPowerLimit = power_limit  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetClockInfo = lambda handle, clock: 1980  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses = processes  # type: ignore[attr-defined]
    return nvml


def _gpu_rows(run: Any) -> dict[str, list[tuple[int, float]]]:
    reader = mlop.open_run(run.dir)
    try:
        rows: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in reader.metrics():
            if row["key"].startswith("sys/gpu"):
                rows[row["key"]].append((row["step"], row["value"]))
        return rows
    finally:
        reader.close()


def _run_with_fake_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_after: int, samples: int, mig: bool = False
) -> tuple[Any, types.ModuleType]:
    fake = _fake_nvml(fail_after, mig)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0.05)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run._writer.flush()
        if len(_gpu_rows(run)["sys/gpu.utilization.0"]) >= samples:
            break
        time.sleep(0.05)
    run.finish()
    return run, fake


def test_two_identical_gpus_each_get_their_own_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, fake = _run_with_fake_gpus(tmp_path, monkeypatch, fail_after=10**9, samples=3)
    rows = _gpu_rows(run)
    last = {key: values[-1][1] for key, values in rows.items()}
    assert last["sys/gpu.utilization.0"] == 40 and last["sys/gpu.utilization.1"] == 50
    assert last["sys/gpu.memory.used.0"] == 20 * GIB and last["sys/gpu.memory.used.1"] == 40 * GIB
    assert last["sys/gpu.memory.total.0"] == last["sys/gpu.memory.total.1"] == 80 * GIB
    assert last["sys/gpu.memory.percentage.0"] == 25.0 and last["sys/gpu.memory.percentage.1"] == 50.0
    assert last["sys/gpu.temperature.0"] == 61 and last["sys/gpu.temperature.1"] == 62
    assert last["sys/gpu.power.0"] == pytest.approx(350.5)  # milliwatts became watts
    assert last["sys/gpu.clock.sm.1"] == 1980
    # Device 0 does not support the power limit: left out, no error; device 1 has it.
    assert "sys/gpu.power.limit.0" not in rows and last["sys/gpu.power.limit.1"] == 700.0
    # The process's own memory: 3 GiB on device 0 (another process's GiB not counted), none on device 1.
    assert last["sys/gpu.process.memory.used.0"] == 3 * GIB
    assert last["sys/gpu.process.memory.used.1"] == 0
    # The GPU keys share the monitor's step counter with the other system metrics.
    assert [step for step, _v in rows["sys/gpu.utilization.0"]] == list(
        range(len(rows["sys/gpu.utilization.0"]))
    )
    assert fake.state["shutdown"] >= 1  # type: ignore[attr-defined]

    system = mlop.open_run(run.dir).system
    assert [(g["index"], g["name"], g["memory_total"]) for g in system["gpu"]] == [
        (0, "NVIDIA H100 80GB HBM3", 80 * GIB),
        (1, "NVIDIA H100 80GB HBM3", 80 * GIB),
    ]
    assert system["gpu"][0]["driver"] == "550.54.15" and system["gpu"][0]["cuda"] == "12.4"


def test_a_gpu_that_fails_mid_run_is_warned_about_once_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run, _fake = _run_with_fake_gpus(tmp_path, monkeypatch, fail_after=2, samples=6)
    rows = _gpu_rows(run)
    assert run.status == "COMPLETED"
    device_0 = [step for step, _v in rows["sys/gpu.utilization.0"]]
    device_1 = [step for step, _v in rows["sys/gpu.utilization.1"]]
    assert len(device_0) >= 6
    assert device_1 == device_0[:2]  # two good readings, then nothing
    assert [step for step, _v in rows["sys/gpu.memory.used.1"]] == device_0[:2]
    warnings = [r for r in caplog.records if "GPU 1" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_a_reading_a_device_does_not_support_is_left_out_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run, _fake = _run_with_fake_gpus(tmp_path, monkeypatch, fail_after=10**9, samples=3, mig=True)
    rows = _gpu_rows(run)
    assert "sys/gpu.utilization.1" not in rows and len(rows["sys/gpu.utilization.0"]) >= 3
    assert [s for s, _v in rows["sys/gpu.memory.used.1"]] == [s for s, _v in rows["sys/gpu.memory.used.0"]]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
