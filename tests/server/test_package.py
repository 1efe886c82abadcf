"""The package's surface: exports, the `mlop server` command, and the downsampling rule."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlop_server
from mlop_server._readapi import downsample
from mlop_server._storage import Series
from mlop_server.testing import ServerProcess


def test_exported_members() -> None:
    assert mlop_server.__all__ == sorted(mlop_server.__all__)
    for name in mlop_server.__all__:
        assert getattr(mlop_server, name) is not None
    with pytest.raises(AttributeError):
        _ = mlop_server.nothing_here  # type: ignore[attr-defined]


def test_mlop_cli_has_the_server_command(tmp_path: Path) -> None:
    mlop = Path(sys.executable).with_name("mlop")
    out = subprocess.run([mlop, "server", "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "--heartbeat-timeout" in out.stdout
    made = subprocess.run(
        [mlop, "server", "keys", "create", "--admin", "--name", "ci", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = made.stdout.strip()
    listed = subprocess.run(
        [mlop, "server", "keys", "list", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "ci" in listed
    assert key not in listed
    with ServerProcess(tmp_path, admin_key="mlps_another_admin_key_0123") as server:
        answer = httpx.post(f"{server.url}/api/slug", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert key not in server.output()
        assert server.key not in server.output()


def test_first_start_prints_a_new_admin_key_once(tmp_path: Path) -> None:
    def start() -> list[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlop_server", "--port", "0", "--data", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip()]
        while not lines[-1].startswith("mlop-server: data in"):  # the last line before serving
            lines.append(proc.stdout.readline().strip())
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
        return lines

    first = start()
    assert first[0].startswith("http://127.0.0.1:")
    assert first[1].startswith("admin key")
    key = first[1].split()[-1]
    assert key.startswith("mlps_")
    second = start()
    assert not any(key in line for line in second)
    db = (tmp_path / "mlop-server.db").read_bytes()
    assert key.encode() not in db


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1000, 1000).map(float)),
        min_size=1,
        max_size=500,
    ),
    st.integers(2, 60),
)
def test_downsample_keeps_each_buckets_extremes(values: list[float], max_points: int) -> None:
    n = len(values)
    series = Series(
        np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.array(values, dtype=np.float64)
    )
    kept = downsample(series, max_points).tolist()
    assert len(kept) <= max(max_points, 0) or n <= max_points
    assert kept == sorted(set(kept))
    if n <= max_points:
        assert kept == list(range(n))
        return
    finite = [v for v in values if not np.isnan(v)]
    kept_values = [values[i] for i in kept]
    if finite:
        assert min(finite) in kept_values
        assert max(finite) in kept_values


def test_server_process_reports_a_failed_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, extra_args=["--no-such-option"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        server.start()
    assert not server.running
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_a_server_does_not_outlive_the_test_run_that_started_it(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from mlop_server.testing import ServerProcess\n"
        "print(ServerProcess(sys.argv[1]).start().pid, flush=True)\n"
        "os._exit(0)  # killed without cleaning up\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 15
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the orphaned server is still running"
        time.sleep(0.1)
