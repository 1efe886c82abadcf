"""What ``pip install mlop-core`` costs: the wheel, the installed size, and ``import mlop`` time.

Builds the wheel of ``packages/mlop-core`` from a source tree (this checkout by default, or another one, such
as ``git worktree add /tmp/before <commit>``), installs it into two throwaway virtual environments (with
``--no-deps``: mlop-core alone; with its dependencies: what a user gets), and times ``import mlop`` in fresh
interpreters of the second one.

    python bench/core_install.py [--root /tmp/before] [--runs 31]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def _size_kib(folder: Path) -> int:
    """Apparent size of every file under ``folder`` (the bytecode pip compiled included), in KiB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


def _venv(path: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return python, Path(purelib)


def _import_ms(python: Path, runs: int) -> tuple[float, float, float]:
    """Median wall time of ``import mlop`` in a fresh interpreter, of an empty one, and -X importtime's."""
    walls, bare, cumulative = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [str(python), "-X", "importtime", "-c", "import mlop"], capture_output=True, text=True, check=True
        )
        walls.append(time.perf_counter() - start)
        for line in done.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "mlop":
                cumulative.append(int(parts[1]) / 1000)
        start = time.perf_counter()
        subprocess.run([str(python), "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    return statistics.median(walls) * 1000, statistics.median(bare) * 1000, statistics.median(cumulative)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = str(args.root / "packages" / "mlop-core")
        wheels = work / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", source, "-w", str(wheels)], check=True
        )
        [wheel] = (work / "wheels").glob("*.whl")
        _, empty = _venv(work / "empty")
        alone_python, alone = _venv(work / "alone")
        full_python, full = _venv(work / "full")
        subprocess.run([str(alone_python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
        subprocess.run([str(full_python), "-m", "pip", "install", "-q", str(wheel)], check=True)
        modules = subprocess.run(
            [str(full_python), "-c", "import sys, mlop; print(len(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        wall, bare, cumulative = _import_ms(full_python, args.runs)
        print(f"source: {args.root}  ({sysconfig.get_python_version()}, {args.runs} fresh interpreters)")
        print(f"wheel: {wheel.stat().st_size / 1024:.0f} KiB")
        alone_kib, mlop_kib = _size_kib(alone) - _size_kib(empty), _size_kib(alone / "mlop")
        print(f"installed, --no-deps: {alone_kib} KiB (the mlop folder: {mlop_kib} KiB)")
        print(f"installed, with dependencies: {_size_kib(full) - _size_kib(empty)} KiB")
        print(f"import mlop: {wall:.1f} ms wall (empty interpreter {bare:.1f} ms), ", end="")
        print(f"-X importtime {cumulative:.1f} ms, {modules} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
