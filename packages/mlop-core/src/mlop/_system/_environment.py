"""The run's environment, stored as the meta value ``systemMetadata`` and sent with the run's creation.

Python and the ML frameworks installed (a fixed list, not every distribution), the OS, host, CPU, memory
and GPUs, the command line, the git state and the start time. Environment variables and the git diff
only when their settings ask for them. Every string that could carry a secret goes through the redactor
first. Field names that the original mlop client also sends (``process``, ``platform``, ``cpu``,
``memory``) keep its spelling, so stock dashboards show them.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from mlop._system import _gpu
from mlop._system._redact import Redactor

__all__ = ["FRAMEWORKS", "collect", "git_info"]

logger = logging.getLogger(__name__)

# Distributions worth knowing the version of when a run misbehaves; only those installed are listed.
FRAMEWORKS: Final = (
    "accelerate",
    "bitsandbytes",
    "datasets",
    "deepspeed",
    "diffusers",
    "flax",
    "jax",
    "jaxlib",
    "keras",
    "lightgbm",
    "lightning",
    "mlop-core",
    "mlop-hf",
    "mlop-lightning",
    "mlop-torch",
    "numpy",
    "nvidia-ml-py",
    "onnx",
    "onnxruntime",
    "optax",
    "pandas",
    "peft",
    "pytorch-lightning",
    "scikit-learn",
    "scipy",
    "sentence-transformers",
    "tensorflow",
    "timm",
    "tokenizers",
    "torch",
    "torchaudio",
    "torchvision",
    "transformers",
    "triton",
    "trl",
    "vllm",
    "xgboost",
)
_GIT_TIMEOUT: Final = 3.0
_SEPARATORS: Final = re.compile(r"[-_.]+")
_MAX_DIFF: Final = 256 * 1024


def collect(
    run_dir: Path,
    redactor: Redactor,
    *,
    nvml: _gpu.Nvml | None = None,
    env_vars: bool = False,
    git_diff: bool = False,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Describe the environment this process runs in.

    Args:
        run_dir: the run directory (its filesystem's size is reported).
        redactor: hides secrets in the command line, the git remote, variables and the diff.
        nvml: an NVML session to describe the GPUs with; when None one is opened and closed here.
        env_vars: include the environment variables (secret ones redacted).
        git_diff: include ``git diff HEAD`` (secrets redacted, cut at 256 KiB).
        started_at: the run's start, seconds since the epoch; now when None.

    Returns:
        A JSON-ready dict; a part that cannot be read is left out, never an error.
    """
    uname = platform.uname()
    try:
        cwd: Path | None = Path.cwd()
    except OSError:  # the working directory was deleted
        cwd = None
    out: dict[str, Any] = {
        "start_time": int((started_at if started_at is not None else time.time()) * 1000),
        "hostname": socket.gethostname(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": packages(),
        "platform": {
            "system": uname.system,
            "node": uname.node,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
            "platform": platform.platform(),
        },
        "timezone": list(time.tzname),
        "process": {
            "pid": os.getpid(),
            "cmdline": redactor.argv([sys.executable, *sys.argv]),
            "exe": sys.executable,
            "cwd": str(cwd) if cwd is not None else None,
        },
    }
    try:
        out.update(_machine(run_dir))
    except Exception:  # broad: psutil fails in odd ways inside sandboxes; the rest is still useful
        logger.debug("could not describe the machine", exc_info=True)
    out["gpu"] = _gpus(nvml)
    git = git_info(cwd, redactor, diff=git_diff) if cwd is not None else None
    if git is None and sys.argv and sys.argv[0]:
        script_dir = Path(sys.argv[0]).absolute().parent
        if script_dir.is_dir() and script_dir != cwd:
            git = git_info(script_dir, redactor, diff=git_diff)
    if git is not None:
        out["git"] = git
    if env_vars:
        out["env"] = redactor.environ(os.environ)
    return out


def packages() -> dict[str, str]:
    """See :func:`_packages`: read once per ``sys.path``."""
    return dict(_packages(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _packages(path: tuple[str, ...]) -> dict[str, str]:
    """The installed versions of the distributions in :data:`FRAMEWORKS`.

    Read from the names of the ``<name>-<version>.dist-info`` folders on ``sys.path`` (first one wins, as
    for imports): no ``importlib.metadata`` to import and no metadata file to parse, which keeps ``init()``
    quick. Where there are eggs, what is still missing is asked of ``importlib.metadata``.
    """
    wanted = set(FRAMEWORKS)
    found: dict[str, str] = {}
    eggs = False
    for entry in path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a missing folder
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                eggs = eggs or name.endswith((".egg-info", ".egg"))
                continue
            project, _, version = name[: -len(".dist-info")].partition("-")
            key = _SEPARATORS.sub("-", project).lower()
            if key in wanted and key not in found and version:
                found[key] = version
    if eggs and len(found) < len(wanted):
        found.update(_from_metadata(sorted(wanted - set(found))))
    return dict(sorted(found.items()))


def _from_metadata(names: list[str]) -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # broad: a broken installation's metadata must not break init()
            logger.debug("could not read the version of %s", name, exc_info=True)
    return found


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def _machine(run_dir: Path) -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    out: dict[str, Any] = {
        "cpu": {
            "physical": psutil.cpu_count(logical=False),
            "virtual": psutil.cpu_count(logical=True),
            "model": _cpu_model(),
        },
        "memory": {"virt": memory.total, "swap": swap.total},
        "boot_time": psutil.boot_time(),
    }
    try:
        out["disk"] = {"total": psutil.disk_usage(str(run_dir)).total}
    except OSError:
        pass
    return out


def _gpus(nvml: _gpu.Nvml | None) -> list[dict[str, Any]]:
    if nvml is not None:
        return nvml.describe()
    own = _gpu.load()
    if own is None:
        return []
    try:
        return own.describe()
    finally:
        own.close()


def _git(cwd: Path, *commands: list[str]) -> list[str | None]:
    """Run git commands side by side; the output of each, or None.

    Forking a training process (gigabytes mapped) takes milliseconds per child: the commands run at once,
    and with an absolute executable, no ``cwd`` and ``close_fds=False`` subprocess may use posix_spawn
    instead (Python's own descriptors are not inheritable, so nothing leaks into git).
    """
    git = shutil.which("git")
    if git is None:
        return [None] * len(commands)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    running: list[subprocess.Popen[str] | None] = []
    for args in commands:
        try:
            running.append(
                subprocess.Popen(
                    [git, "-C", str(cwd), *args],
                    close_fds=False,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
            )
        except OSError:  # no git
            running.append(None)
    out: list[str | None] = []
    for proc in running:
        if proc is None:
            out.append(None)
            continue
        try:
            stdout, _ = proc.communicate(timeout=_GIT_TIMEOUT)
        except subprocess.TimeoutExpired:  # a huge checkout or a hung filesystem: leave the field out
            proc.kill()
            proc.communicate()
            out.append(None)
            continue
        out.append(stdout if proc.returncode == 0 else None)
    return out


def git_info(where: Path, redactor: Redactor, *, diff: bool = False) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and origin of the git checkout holding ``where``; None outside one.

    The remote URL loses any credentials it carries (``https://user:token@host/...``).
    """
    if "GIT_DIR" not in os.environ and not any((p / ".git").exists() for p in (where, *where.parents)):
        return None  # not a checkout: no need to start git at all
    commands = [
        ["rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"],
        ["status", "--porcelain", "--untracked-files=no"],
        ["config", "--get", "remote.origin.url"],
    ]
    if diff:
        commands.append(["diff", "HEAD"])
    head, status, remote, *rest = _git(where, *commands)
    lines = head.splitlines() if head is not None else []
    if len(lines) < 3:
        return None
    root, commit, branch = lines[0], lines[1], lines[2]
    out: dict[str, Any] = {
        "root": root,
        "commit": commit,
        "branch": None if branch == "HEAD" else branch,
        "dirty": None if status is None else bool(status.strip()),
        "remote": redactor.url(remote.strip()) if remote else None,
    }
    if rest and rest[0] is not None:
        text = rest[0]
        out["diff_truncated"] = len(text) > _MAX_DIFF
        out["diff"] = redactor.text(text[:_MAX_DIFF])
    return out
