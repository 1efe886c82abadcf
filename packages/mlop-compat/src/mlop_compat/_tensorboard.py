"""``mlop import tensorboard LOGDIR``: TensorBoard event files become mlop runs.

Every folder under LOGDIR that holds event files (``*tfevents*``) becomes one run in the local store, in
offline mode (``mlop sync`` uploads it later): scalars, histograms, images, text and audio, each at its
event's step and wall time. The run's id is derived from the folder's name and its first event file, and
``tensorboard-import.json`` in the run directory records how far each event file was read, so importing
again adds only what the files gained since (nothing when they did not change).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from mlop_compat import log_at
from mlop_compat._tensorboard_reader import CorruptRecordError, EventValue, read_events

__all__ = ["ImportResult", "add_import_command", "find_runs", "import_tensorboard"]

logger = logging.getLogger("mlop.compat._tensorboard")  # the name it had in mlop-core

STATE_FILE: Final = "tensorboard-import.json"
Progress = Callable[[int, int, str], None]


@dataclasses.dataclass
class ImportResult:
    """What importing one TensorBoard run did.

    ``status`` is ``imported`` (a new run), ``updated`` (new events added to a run imported before),
    ``unchanged`` (nothing new), ``skipped`` (a run of that id exists but was not made by this importer) or
    ``failed`` (``error`` says why; what was read before stays).
    """

    source: Path
    name: str
    run_id: str
    run_dir: Path
    status: str = "unchanged"
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    steps: tuple[int, int] | None = None
    error: str | None = None


def _is_event_file(path: Path) -> bool:
    return path.is_file() and "tfevents" in path.name and not path.name.endswith((".tmp", ".lock"))


def find_runs(logdir: Path) -> list[Path]:
    """Every folder under ``logdir`` (itself included) that holds event files, sorted."""
    found = {p.parent for p in logdir.rglob("*tfevents*") if _is_event_file(p)}
    return sorted(found)


def _event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_event_file(p))


def _run_id(folder: Path, first_file: Path) -> str:
    digest = hashlib.sha256(f"{folder.name}\0{first_file.name}".encode()).hexdigest()
    return f"tb-{digest[:16]}"


def _load_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("mlop: %s is unreadable (%s); importing from the start", run_dir / STATE_FILE, exc)
        return None
    return state if isinstance(state, dict) else None


def _save_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, run_dir / STATE_FILE)


class _Converter:
    """Turns event values into what ``run.log`` takes, counting what it logs and skips."""

    def __init__(self, result: ImportResult, scratch: Path) -> None:
        self.result = result
        self.scratch = scratch
        self._sounds = 0

    def convert(self, value: EventValue) -> Any:
        import mlop

        kind = value.kind
        try:
            if kind in ("scalar", "hparams"):
                return value.value
            if kind == "histogram":
                return mlop.Histogram(value.value)
            if kind == "images":
                images = [mlop.Image(data) for data in value.value]
                return images[0] if len(images) == 1 else images
            if kind == "text":
                if isinstance(value.value, str):
                    return value.value
                return mlop.Table(value.value)
            if kind == "audio":
                return [self._audio(data, value.extra) for data in value.value]
        except (ImportError, ValueError, TypeError) as exc:
            self.result.skipped[f"{kind} ({exc})"] += 1
            return None
        self.result.skipped[str(value.extra or kind)] += 1
        return None

    def _audio(self, data: bytes, rate: Any) -> Any:
        import mlop

        self._sounds += 1
        path = self.scratch / f"sound-{self._sounds}.wav"
        path.write_bytes(data)
        return mlop.Audio(path, rate=int(rate) if rate else None)


def _log_file(
    run: Any,
    path: Path,
    offset: int,
    state: dict[str, Any],
    converter: _Converter,
    advance: Callable[[int], None],
) -> int:
    """Log the events of one file from ``offset``; returns the offset past the last complete record."""
    plugins: dict[str, str] = state.setdefault("plugins", {})
    result = converter.result
    for event, end in read_events(path, offset, plugins):
        advance(end - offset)
        offset = end
        if event is None:
            continue
        data: dict[str, Any] = {}
        for value in event.values:
            converted = converter.convert(value)
            if converted is None:
                continue
            if value.kind == "hparams":
                run.update_config(converted)
            else:
                data[value.tag] = converted
            result.counts[value.kind] += 1
        if not data:
            continue
        step = max(int(event.step), 0)
        log_at(run, data, step, timestamp=event.wall_time)
        low, high = result.steps or (step, step)
        result.steps = (min(low, step), max(high, step))
    return offset


def _import_one(
    folder: Path, logdir: Path, project: str, dir: str | None, progress: Callable[[int], None]
) -> ImportResult:
    import mlop
    from mlop._init import run_directory
    from mlop._status import error_metadata
    from mlop._store import STORE_FILE

    files = _event_files(folder)
    relative = folder.relative_to(logdir).as_posix()
    name = logdir.resolve().name if relative == "." else relative
    run_id = _run_id(folder, files[0])
    run_dir = run_directory(dir, project, run_id)
    result = ImportResult(folder, name, run_id, run_dir)
    exists = (run_dir / STORE_FILE).exists()
    state = _load_state(run_dir) if exists else None
    if exists and state is None:
        # Without the record of what was read, importing again would store every value twice.
        result.status = "skipped"
        result.error = f"{run_dir} exists without {STATE_FILE}; remove the run to import it again"
        progress(0)
        return result
    state = state or {"source": str(folder.resolve()), "files": {}}
    offsets: dict[str, int] = state.setdefault("files", {})
    todo = [(f, int(offsets.get(f.name, 0))) for f in files if f.stat().st_size > int(offsets.get(f.name, 0))]
    if not todo:
        progress(0)
        return result
    run = mlop.init(
        project=project,
        name=name,
        dir=dir,
        run_id=run_id,
        resume=exists,
        mode="offline",
        config={"tensorboard": {"logdir": str(folder.resolve())}},
        tags=["tensorboard"],
        disable_system_metrics=True,
        disable_console=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="mlop-tb-") as scratch:
            converter = _Converter(result, Path(scratch))
            for path, offset in todo:
                try:
                    offsets[path.name] = _log_file(run, path, offset, state, converter, progress)
                except CorruptRecordError as exc:
                    result.skipped[f"the rest of {path.name} ({exc})"] += 1
                    offsets[path.name] = path.stat().st_size
                _save_state(run_dir, state)
            run.finish()
    except Exception as exc:  # broad: one broken run must not stop the import of the others
        run._end("FAILED", error_metadata(type(exc), exc, exc.__traceback__))
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        return result
    result.status = "updated" if exists else "imported"
    return result


def import_tensorboard(
    logdir: str | os.PathLike[str],
    project: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> list[ImportResult]:
    """Import every TensorBoard run under ``logdir`` into the local mlop store.

    Args:
        logdir: the folder TensorBoard was pointed at.
        project: the mlop project (default: ``MLOP_PROJECT``, else ``default``).
        dir: the folder that holds ``.mlop`` (default: ``MLOP_DIR``, else the working directory).
        progress: called as ``progress(bytes done, bytes in all, run name)`` while reading.

    Returns:
        One result per run folder, in order.

    Raises:
        FileNotFoundError: ``logdir`` is not a folder.
        ConfigError: the project name is not one mlop takes.
    """
    from mlop._init import _check_name
    from mlop._settings import resolve_settings

    root = Path(logdir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    settings = resolve_settings({"project": project, "dir": os.fspath(dir) if dir else None}, None)
    _check_name("project", settings.project)
    folders = find_runs(root)
    total = 0
    for folder in folders:
        total += sum(p.stat().st_size for p in _event_files(folder))
    done = 0
    results = []
    for folder in folders:
        name = folder.relative_to(root).as_posix()

        def advance(n: int, name: str = name) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total, name)

        results.append(_import_one(folder, root, settings.project, settings.dir, advance))
        # Files read before (or unchanged) count as done too, so the bar ends full.
        done = sum(p.stat().st_size for f in folders[: len(results)] for p in _event_files(f))
        if progress is not None:
            progress(min(done, total), total, name)
    return results


# -- the command line ------------------------------------------------------------------------------------


class _Bar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * 30)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} {name[:40]:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _describe(result: ImportResult) -> str:
    parts = [f"{n} {kind}" for kind, n in sorted(result.counts.items())]
    if result.steps:
        parts.append(f"steps {result.steps[0]}-{result.steps[1]}")
    text = f"{result.status:<9} {result.name} -> {result.run_dir}"
    if parts:
        text += f" ({', '.join(parts)})"
    for reason, n in sorted(result.skipped.items()):
        text += f"\n          skipped {n} x {reason}"
    if result.error:
        text += f"\n          error: {result.error}"
    return text


def _command(args: argparse.Namespace) -> int:
    from mlop._exceptions import ConfigError

    bar = _Bar()
    try:
        results = import_tensorboard(args.logdir, project=args.project, dir=args.dir, progress=bar)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"mlop import tensorboard: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    if not results:
        print(f"no TensorBoard event files under {Path(args.logdir).resolve()}")
        return 1
    for result in results:
        print(_describe(result))
    states = Counter(r.status for r in results)
    print(
        ", ".join(f"{n} {status}" for status, n in sorted(states.items())) + ". Upload with: mlop sync --all"
    )
    return 1 if states["failed"] or states["skipped"] else 0


def add_import_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mlop import tensorboard LOGDIR [--project P] [--dir D]`` to the command line."""
    command = sub.add_parser("import", help="import runs from another tracker")
    sources = command.add_subparsers(dest="source", metavar="SOURCE", required=True)
    tensorboard = sources.add_parser(
        "tensorboard", help="turn TensorBoard event files into mlop runs (offline; upload with mlop sync)"
    )
    tensorboard.add_argument("logdir", help="the folder TensorBoard reads (every run folder under it)")
    tensorboard.add_argument("--project", default=None, help="the mlop project (default: MLOP_PROJECT)")
    tensorboard.add_argument("--dir", default=None, help="the folder that holds .mlop (default: here)")
    tensorboard.set_defaults(func=_command)
