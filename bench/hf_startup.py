"""What mlop-hf's start-up hook adds to every Python process, and to every import after it.

The ``.pth`` file that registers ``report_to="mlop"`` runs in every interpreter of the environment, so its
cost is paid by processes that never train anything. Measured three ways:

- wall time of ``python -c pass``, with the hook and with ``MLOP_HF_DISABLE_AUTOLOAD=1`` (the ``.pth`` then
  imports nothing), alternated run by run so that load on the machine hits both sides alike;
- ``-X importtime``: the cumulative microseconds of ``site``, which runs every ``.pth`` file, both ways;
- in-process: compiling and running the ``.pth`` line as ``site`` does, and what the stub finder it leaves
  in ``sys.meta_path`` costs each later import (and the full finder, after transformers came).

Run: .venv/bin/python bench/hf_startup.py [--runs 200]
Prints one JSON document with every figure; bench/README.md holds the latest ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

_OFF = {"MLOP_HF_DISABLE_AUTOLOAD": "1"}


def _start(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - started


def _wall(runs: int) -> dict[str, float]:
    base = {k: v for k, v in os.environ.items() if k != "MLOP_HF_DISABLE_AUTOLOAD"}
    on: list[float] = []
    off: list[float] = []
    for _ in range(5):  # warm the page cache and the .pyc files
        _start(base)
        _start({**base, **_OFF})
    for _ in range(runs):
        on.append(_start(base))
        off.append(_start({**base, **_OFF}))
    pairs = sorted(a - b for a, b in zip(on, off, strict=True))
    return {
        "median_ms_with_hook": statistics.median(on) * 1000,
        "median_ms_without": statistics.median(off) * 1000,
        "median_paired_difference_ms": statistics.median(pairs) * 1000,
        "min_ms_with_hook": min(on) * 1000,
        "min_ms_without": min(off) * 1000,
    }


def _site_time(runs: int) -> dict[str, float]:
    """``-X importtime``'s cumulative microseconds for ``site`` (which runs every ``.pth``), both ways."""
    base = {k: v for k, v in os.environ.items() if k != "MLOP_HF_DISABLE_AUTOLOAD"}
    on: list[int] = []
    off: list[int] = []
    for _ in range(runs):
        for env, into in ((base, on), ({**base, **_OFF}, off)):
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", "pass"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            for line in done.stderr.splitlines():
                parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
                if len(parts) == 3 and parts[2] == "site":
                    into.append(int(parts[1]))
    return {
        "site_median_us_with_hook": statistics.median(on),
        "site_median_us_without": statistics.median(off),
        "site_min_us_with_hook": min(on),
        "site_min_us_without": min(off),
    }


def _pth_line(calls: int) -> dict[str, Any]:
    """What the ``.pth`` line itself costs: compiling and running it, as ``site`` does."""
    import sysconfig

    path = os.path.join(sysconfig.get_paths()["purelib"], "mlop_hf_autoload.pth")
    with open(path, encoding="utf-8") as f:
        line = f.read().strip()
    samples: list[int] = []
    for _ in range(calls):
        before = list(sys.meta_path)
        started = time.perf_counter_ns()
        exec(line, {})
        samples.append(time.perf_counter_ns() - started)
        sys.meta_path[:] = before
    stub_samples: dict[str, float] = {}
    exec(line, {})
    stub = sys.meta_path[0]
    names = [f"package.module_{i}" for i in range(100)]
    for label, finder in (("stub", stub), ("hook", _real_hook())):
        started = time.perf_counter_ns()
        for _ in range(10_000):
            for name in names:
                finder.find_spec(name)
        stub_samples[label] = (time.perf_counter_ns() - started) / (10_000 * len(names))
    sys.meta_path.remove(stub)
    return {
        "path": path,
        "exec_median_us": statistics.median(samples) / 1000,
        "exec_min_us": min(samples) / 1000,
        "stub_finder_ns_per_import": stub_samples["stub"],
        "full_finder_ns_per_import": stub_samples["hook"],
    }


def _real_hook() -> Any:
    from mlop_hf._autoload import MlopImportHook

    return MlopImportHook()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="process starts per side")
    args = parser.parse_args()
    result = {
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
        "wall": _wall(args.runs),
        "importtime": _site_time(max(20, args.runs // 4)),
        "pth": _pth_line(2000),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
