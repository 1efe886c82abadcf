"""The system monitor: a background thread that samples the machine and the process into ``sys/`` keys.

Each sample is one item of the store kind ``system``, shaped like a metrics item, ``(sample index, time,
{key: number})``: the sample index is the monitor's own step counter, never the user's step. The key naming
scheme is documented in docs/system-metrics.md. psutil is imported here, when a run starts a monitor, never
at ``import mlop``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from mlop._system import _gpu

__all__ = ["Sampler", "SystemMonitor"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT: Final = 5.0


class Sampler:
    """Reads the machine and the process; one call of :meth:`sample` is one sample.

    Rates (disk and network bytes per second) are differences against the previous sample (the first
    sample: against the sampler's creation).

    Args:
        disk_path: a path on the filesystem whose usage is reported (the run directory).
        nvml: an NVML session for GPU metrics, or None for none.
    """

    def __init__(self, disk_path: str, nvml: _gpu.Nvml | None) -> None:
        import psutil

        self._psutil = psutil
        self._disk_path = disk_path
        self._nvml = nvml
        self._process = psutil.Process(os.getpid())
        self._failed: set[str] = set()
        self._last_time = time.monotonic()
        self._last_disk = self._read_counters(psutil.disk_io_counters)
        self._last_net = self._read_counters(psutil.net_io_counters)
        # cpu_percent measures since its previous call: this first call starts the clock.
        psutil.cpu_percent(percpu=True)
        self._process.cpu_percent()

    @staticmethod
    def _read_counters(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception:  # broad: psutil raises various errors where /proc/diskstats or sysfs is hidden
            return None

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    def sample(self) -> dict[str, float]:
        """One reading of every group; a group that fails is warned about once and left out."""
        out: dict[str, float] = {}
        now = time.monotonic()
        elapsed, self._last_time = max(now - self._last_time, 1e-9), now
        for name, read in (
            ("cpu", self._cpu),
            ("memory", self._memory),
            ("disk", lambda o: self._disk(o, elapsed)),
            ("network", lambda o: self._network(o, elapsed)),
            ("process", self._process_metrics),
        ):
            if name in self._failed:
                continue
            try:
                read(out)
            except (
                Exception
            ) as exc:  # broad: one failing group (a sandbox hiding /proc) must not stop the rest
                self._failed.add(name)
                logger.warning("mlop: no %s system metrics from now on: %s", name, exc)
        if self._nvml is not None:
            out.update(self._nvml.sample())
        return out

    def _cpu(self, out: dict[str, float]) -> None:
        cores = self._psutil.cpu_percent(percpu=True)
        if cores:
            out["sys/cpu.percentage"] = sum(cores) / len(cores)
        for index, value in enumerate(cores):
            out[f"sys/cpu.percentage.{index}"] = float(value)

    def _memory(self, out: dict[str, float]) -> None:
        memory = self._psutil.virtual_memory()
        out["sys/memory.used"] = float(memory.used)
        out["sys/memory.available"] = float(memory.available)
        out["sys/memory.percentage"] = float(memory.percent)
        swap = self._psutil.swap_memory()
        out["sys/memory.swap.used"] = float(swap.used)
        out["sys/memory.swap.percentage"] = float(swap.percent)

    def _disk(self, out: dict[str, float], elapsed: float) -> None:
        usage = self._psutil.disk_usage(self._disk_path)
        out["sys/disk.used"] = float(usage.used)
        out["sys/disk.percentage"] = float(usage.percent)
        counters = self._read_counters(self._psutil.disk_io_counters)
        last, self._last_disk = self._last_disk, counters
        if counters is not None and last is not None:
            out["sys/disk.read_rate"] = max(counters.read_bytes - last.read_bytes, 0) / elapsed
            out["sys/disk.write_rate"] = max(counters.write_bytes - last.write_bytes, 0) / elapsed

    def _network(self, out: dict[str, float], elapsed: float) -> None:
        counters = self._read_counters(self._psutil.net_io_counters)
        last, self._last_net = self._last_net, counters
        if counters is not None and last is not None:
            out["sys/network.sent_rate"] = max(counters.bytes_sent - last.bytes_sent, 0) / elapsed
            out["sys/network.received_rate"] = max(counters.bytes_recv - last.bytes_recv, 0) / elapsed

    def _process_metrics(self, out: dict[str, float]) -> None:
        process = self._process
        with process.oneshot():
            out["sys/process.cpu.percentage"] = float(process.cpu_percent())
            out["sys/process.memory.rss"] = float(process.memory_info().rss)
            out["sys/process.threads"] = float(process.num_threads())
            try:
                out["sys/process.files.open"] = float(len(process.open_files()))
            except self._psutil.AccessDenied:
                pass


class SystemMonitor:
    """Samples every ``interval`` seconds on a daemon thread and hands each sample to ``emit``.

    Args:
        sampler: what takes a sample.
        interval: seconds between samples.
        emit: called with ``(sample index, time, values)`` from the monitor's thread.
        first_index: the first sample index (a resumed run continues after its last sample).
    """

    def __init__(
        self,
        sampler: Sampler,
        interval: float,
        emit: Callable[[int, float, dict[str, float]], None],
        first_index: int = 0,
    ) -> None:
        self._sampler = sampler
        self._interval = interval
        self._emit = emit
        self._index = first_index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlop-system-monitor", daemon=True)

    def start(self) -> SystemMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling: wakes the thread at once (an event, not a sleep) and waits for it briefly."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
        if not self._thread.is_alive():
            self._sampler.close()

    def _loop(self) -> None:
        deadline = time.monotonic() + self._interval
        while not self._stop.wait(max(deadline - time.monotonic(), 0.0)):
            # Keep to the grid of the start time; after a stall longer than an interval, start a new grid.
            now = time.monotonic()
            deadline = deadline + self._interval if deadline + self._interval > now else now + self._interval
            try:
                values = self._sampler.sample()
                if values:
                    self._emit(self._index, time.time(), values)
                    self._index += 1
            except Exception:  # broad: the monitor must never die loudly inside a training process
                logger.exception("mlop: a system metrics sample failed")
