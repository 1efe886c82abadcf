"""GPU metrics and descriptions through NVML (the ``pynvml`` module of nvidia-ml-py).

Everything here degrades to nothing: without the module, the driver, or a GPU, :func:`load` returns None
and the run has no GPU keys. A value that a device does not support is left out; a device that fails in
any other way (it fell off the bus, its driver reset) is reported once as a warning and skipped from then on.
Devices are keyed by their NVML index, so two identical GPUs never share a key.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any, Final

__all__ = ["Nvml", "load"]

logger = logging.getLogger(__name__)

_NOT_SUPPORTED: Final = 3  # NVML_ERROR_NOT_SUPPORTED, when the module does not name it


def load() -> Nvml | None:
    """Initialise NVML; None when there is no module, no driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # broad: NVML raises its own error classes, or OSError when libnvidia-ml is missing
        logger.debug("NVML is not usable here; no GPU metrics", exc_info=True)
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception:  # broad: as above
        count = 0
    if count <= 0:
        _shutdown(pynvml)
        return None
    return Nvml(pynvml, count)


def _shutdown(module: ModuleType) -> None:
    try:
        module.nvmlShutdown()
    except Exception:  # broad: shutting down a broken library must not raise
        logger.debug("nvmlShutdown failed", exc_info=True)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """An initialised NVML session with ``count`` devices. Not thread-safe: one sampling thread uses it.

    Args:
        module: the ``pynvml`` module (the real one, or a stand-in in tests).
        count: the number of devices NVML reported.
    """

    def __init__(self, module: ModuleType, count: int) -> None:
        self._nvml = module
        self.count = count
        self._pid = os.getpid()
        self._handles: dict[int, Any] = {}
        self._lost: set[int] = set()
        self._unsupported: set[tuple[int, str]] = set()
        self._closed = False

    def close(self) -> None:
        """Shut NVML down; the session is useless afterwards."""
        if not self._closed:
            self._closed = True
            _shutdown(self._nvml)

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            handle = self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return handle

    def _is_not_supported(self, exc: Exception) -> bool:
        code = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED)
        return getattr(exc, "value", None) == code

    def describe(self) -> list[dict[str, Any]]:
        """Name, memory, driver and CUDA version of every device, for the run's environment."""
        nvml = self._nvml
        driver = cuda = None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:  # broad: NVML errors vary by driver; the field is simply left out
            logger.debug("no NVML driver version", exc_info=True)
        try:
            version = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        except Exception:  # broad: as above
            logger.debug("no NVML CUDA version", exc_info=True)
        out: list[dict[str, Any]] = []
        for index in range(self.count):
            entry: dict[str, Any] = {"index": index, "driver": driver, "cuda": cuda}
            try:
                handle = self._handle(index)
                entry["name"] = _text(nvml.nvmlDeviceGetName(handle))
                entry["memory_total"] = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception:  # broad: a device that cannot describe itself is listed with what is known
                logger.debug("NVML could not describe GPU %d", index, exc_info=True)
            out.append(entry)
        return out

    def sample(self) -> dict[str, float]:
        """One reading of every device still present, as ``sys/gpu.*`` keys (see docs/system-metrics.md)."""
        out: dict[str, float] = {}
        for index in range(self.count):
            if index in self._lost:
                continue
            try:
                self._sample_device(index, out)
            except Exception as exc:  # broad: any NVML failure of a device (GpuIsLost, Unknown) drops it
                self._lost.add(index)
                logger.warning(
                    "mlop: GPU %d stopped answering (%s); its metrics are no longer logged", index, exc
                )
        return out

    def _sample_device(self, index: int, out: dict[str, float]) -> None:
        """Every reading of one device; any error but NOT_SUPPORTED propagates (the device is gone)."""
        handle = self._handle(index)
        suffix = f".{index}"
        util = self._read(index, "utilization", self._nvml.nvmlDeviceGetUtilizationRates, handle)
        if util is not None:
            out["sys/gpu.utilization" + suffix] = float(util.gpu)
        memory = self._read(index, "memory", self._nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            out["sys/gpu.memory.used" + suffix] = float(memory.used)
            out["sys/gpu.memory.total" + suffix] = float(memory.total)
            if memory.total:
                out["sys/gpu.memory.percentage" + suffix] = 100.0 * memory.used / memory.total
        for key, read in (
            ("sys/gpu.temperature", self._temperature),
            ("sys/gpu.power", self._power),
            ("sys/gpu.power.limit", self._power_limit),
            ("sys/gpu.clock.sm", self._sm_clock),
            ("sys/gpu.process.memory.used", self._process_memory),
        ):
            value = self._read(index, key, read, handle)
            if value is not None:
                out[key + suffix] = float(value)

    def _read(self, index: int, name: str, read: Any, handle: Any) -> Any:
        """One reading; a device that does not support it (NOT_SUPPORTED) is not asked again: None."""
        if (index, name) in self._unsupported:
            return None
        try:
            return read(handle)
        except Exception as exc:
            if self._is_not_supported(exc):
                self._unsupported.add((index, name))
                return None
            raise

    def _temperature(self, handle: Any) -> float:
        sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)
        return float(self._nvml.nvmlDeviceGetTemperature(handle, sensor))

    def _power(self, handle: Any) -> float:
        return float(self._nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts to watts

    def _power_limit(self, handle: Any) -> float:
        return float(self._nvml.nvmlDeviceGetEnforcedPowerLimit(handle)) / 1000.0

    def _sm_clock(self, handle: Any) -> float:
        clock = getattr(self._nvml, "NVML_CLOCK_SM", 1)
        return float(self._nvml.nvmlDeviceGetClockInfo(handle, clock))

    def _process_memory(self, handle: Any) -> float | None:
        """Bytes of this device's memory that this process holds; None when NVML does not tell."""
        processes = list(self._nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        graphics = getattr(self._nvml, "nvmlDeviceGetGraphicsRunningProcesses", None)
        if graphics is not None:
            try:
                processes += list(graphics(handle))
            except Exception as exc:
                if not self._is_not_supported(exc):
                    raise
        used = [p.usedGpuMemory for p in processes if getattr(p, "pid", None) == self._pid]
        if any(u is None for u in used):
            return None  # NVML lists the process but cannot see its memory (a container, Windows WDDM)
        return float(sum(used))
