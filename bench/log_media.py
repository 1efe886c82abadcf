"""What logging an image every step costs the training loop, and that every image is on disk after finish.

The target (issue "Data types"): a 256×256 RGB uint8 image per step costs ``run.log`` at most 100 µs
(median), and 10,000 such steps end with all 10,000 images stored after ``finish()``. The baseline, in the
same process, is what the training thread cannot avoid: one copy of the array into a queue.

Run: .venv/bin/python bench/log_media.py [--steps 10000] [--pattern noise|smooth]
Prints one JSON document; bench/README.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import mlop


def _images(pattern: str, size: int) -> np.ndarray[Any, Any]:
    """The base image: uniform noise (PNG's worst case) or a smooth gradient with mild noise."""
    rng = np.random.default_rng(0)
    if pattern == "noise":
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    base = np.stack([xs, ys, (xs + ys) // 2], axis=-1).astype(np.int16)
    return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)


def _stamp(image: np.ndarray[Any, Any], i: int) -> None:
    """Make each step's image distinct (content-addressing would store equal images once)."""
    image[0, 0, 0] = i & 0xFF
    image[0, 1, 0] = (i >> 8) & 0xFF


def _median_us(samples: list[int]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "median_us": samples[len(samples) // 2] / 1000,
        "p90_us": samples[int(len(samples) * 0.9)] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }


def bench_images(steps: int, pattern: str, root: str) -> dict[str, Any]:
    image = _images(pattern, 256)
    clock = time.perf_counter_ns
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    base = [0] * min(steps, 2000)
    for i in range(len(base)):
        _stamp(image, i)
        start = clock()
        q.put(image.copy())
        base[i] = clock() - start
    del q

    proc = psutil.Process()
    run = mlop.init(project="bench", dir=root, disable_system_metrics=True, disable_console=True)
    samples = [0] * steps
    peak_rss = proc.memory_info().rss
    wall = time.perf_counter()
    for i in range(steps):
        _stamp(image, i)
        start = clock()
        run.log({"samples/image": mlop.Image(image)})
        samples[i] = clock() - start
        if i % 500 == 0:
            peak_rss = max(peak_rss, proc.memory_info().rss)
    loop_s = time.perf_counter() - wall
    last = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - last

    reader = mlop.open_run(run.dir)
    rows = list(reader.media("samples/image"))
    on_disk = sum(1 for row in rows if Path(row["path"]).is_file())
    distinct = len({row["path"] for row in rows})
    steps_seen = len({row["step"] for row in rows})
    reader.close()
    return {
        "steps": steps,
        "pattern": pattern,
        "baseline_copy_into_queue": _median_us(base),
        "run_log_image": _median_us(samples),
        "loop_s": round(loop_s, 2),
        "finish_after_last_log_s": round(finish_s, 2),
        "peak_rss_mb": round(peak_rss / 2**20),
        "file_rows": len(rows),
        "rows_with_file_on_disk": on_disk,
        "distinct_files": distinct,
        "distinct_steps": steps_seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--pattern", choices=["noise", "smooth"], default="smooth")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        report = bench_images(args.steps, args.pattern, root)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
