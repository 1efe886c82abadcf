"""The ``mlop`` command line: ``export`` and ``runs`` here, the online commands, and those plugins add."""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

#: The statuses a run can have (``mlop runs --status``).
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED")
#: Keys named in the message about an unknown key, at most.
SHOWN_KEYS = 20


def _git_commit(path: str) -> str | None:
    """The checkout's commit at ``path`` (``-dirty`` when tracked files changed), or None."""
    try:
        out = subprocess.run(
            ["git", "-C", path, "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _built_commit(dist: importlib.metadata.Distribution) -> str | None:
    """The commit a build hook wrote into the distribution (``<package>/_build_info.py``), or None."""
    for file in dist.files or ():
        if file.name == "_build_info.py":
            try:
                text = file.read_text(encoding="utf-8")
            except OSError:
                return None
            found = re.search(r"^COMMIT\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
            return found.group(1) if found else None
    return None


def _commit(dist: importlib.metadata.Distribution) -> str:
    """The git commit a distribution was built from: its checkout's (editable) or its build info's."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null") or {}
    except ValueError:
        direct = {}
    source = str(direct.get("url") or "")
    editable = bool((direct.get("dir_info") or {}).get("editable"))
    local = source[len("file://") :] if source.startswith("file://") else None
    if editable and local:
        return _git_commit(local) or "unknown"
    built = _built_commit(dist)
    if built:
        return built
    if local and Path(local).is_dir():
        return _git_commit(local) or "unknown"
    return "unknown"


def _mlop_distributions() -> Iterator[importlib.metadata.Distribution]:
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if (name == "mlop-core" or name.startswith("mlop-")) and name not in seen:
            seen.add(name)
            yield dist


def _version_text() -> str:
    lines = []
    for dist in sorted(_mlop_distributions(), key=lambda d: d.metadata["Name"].lower()):
        lines.append(f"{dist.metadata['Name']} {dist.version} (commit {_commit(dist)})")
    return "\n".join(lines) or "mlop (no distribution metadata found)"


def _fail(command: str, message: str) -> int:
    print(f"mlop {command}: {message}", file=sys.stderr)
    return 1


# -- mlop export -------------------------------------------------------------------------------------------


def _runs_root(root: str | None) -> Path:
    """The folder whose ``<project>/<run id>/`` subfolders are runs, as ``list_runs`` finds it."""
    base = Path(root) if root is not None else Path(os.environ.get("MLOP_DIR") or Path.cwd())
    return base / ".mlop" if (base / ".mlop").is_dir() else base


def _find_run(spec: str, root: str | None) -> Path:
    """The run folder ``spec`` names: a folder (or its store file), else a run id under ``root``.

    Raises:
        StoreError: neither a run folder nor the id of exactly one run under ``root``.
    """
    from mlop._exceptions import StoreError
    from mlop._store import STORE_FILE

    path = Path(spec)
    if path.is_dir() and not (path / STORE_FILE).exists():  # a folder of runs (.mlop, a project, above)
        patterns = ("*/", "*/*/", ".mlop/*/*/")
        inside = sorted(p.parent for pattern in patterns for p in path.glob(pattern + STORE_FILE))
        if inside:
            raise StoreError(
                f"{spec} is a folder of {len(inside)} runs; give one run's folder (such as {inside[0]}) "
                "or its id (`mlop runs` lists them)"
            )
    if path.exists() or os.sep in spec or (os.altsep and os.altsep in spec):
        return path  # open_run says what is wrong with it
    base = _runs_root(root)
    found = sorted(p.parent for p in base.glob(f"*/{spec}/{STORE_FILE}")) if spec not in (".", "..") else []
    if len(found) == 1:
        return found[0]
    if found:
        where = ", ".join(str(p) for p in found)
        raise StoreError(f"several runs have the id {spec!r} ({where}); give the run's folder")
    raise StoreError(f"no mlop run store at {spec!r}, and no run with that id under {base}")


def _keys_of(run: Any) -> list[str]:
    keys: dict[str, None] = {}
    for row in run.metrics():
        keys[row["key"]] = None
    for row in run.data():
        keys[row["key"]] = None
    for row in run.media():
        keys[row["key"]] = None
    return list(keys)


def _rows(run: Any, key: str | None) -> Iterator[dict[str, Any]]:
    from mlop._values import wire_number

    for row in run.metrics(key):  # NaN and the infinities as the protocol writes them: valid JSON
        yield {**row, "type": "metric", "value": wire_number(row["value"])}
    yield from run.data(key)
    if key is not None:  # a media key: its files
        for item in run.media(key):
            yield {
                "key": item["key"],
                "step": item["step"],
                "time": item["time"],
                "type": item.get("type") or "file",
                "value": item["path"],
                "caption": item.get("caption"),
            }


def _first_and_rest(rows: Iterator[dict[str, Any]]) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]]]:
    first = next(rows, None)
    return first, rows


def _write_rows(rows: Iterable[dict[str, Any]], fmt: str) -> None:
    out = sys.stdout
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
    elif fmt == "json":
        out.write("[")
        for i, row in enumerate(rows):
            out.write(("," if i else "") + "\n" + json.dumps(row))
        out.write("\n]\n")
    else:
        writer = csv.DictWriter(
            out, fieldnames=["key", "step", "time", "type", "value", "caption"], extrasaction="ignore"
        )
        writer.writeheader()
        for row in rows:
            value = row["value"]
            writer.writerow(
                {**row, "value": value if isinstance(value, (int, float, str)) else json.dumps(value)}
            )


def _export(args: argparse.Namespace) -> int:
    from mlop._exceptions import StoreError
    from mlop._reader import open_run

    if args.key and args.key_option and args.key != args.key_option:
        return _fail("export", f"two keys given ({args.key!r} and --key {args.key_option!r}); give one")
    key = args.key or args.key_option
    try:
        with open_run(_find_run(args.run, args.dir)) as run:
            first, rest = _first_and_rest(_rows(run, key))
            if first is None and key is not None:
                known = _keys_of(run)
                shown = ", ".join(known[:SHOWN_KEYS]) + (" ..." if len(known) > SHOWN_KEYS else "")
                return _fail(
                    "export",
                    f"run {run.id} has no key {key!r}; its keys: {shown}"
                    if known
                    else f"run {run.id} has no key {key!r}; it has logged nothing yet",
                )
            _write_rows(_chain(first, rest), args.format)
    except StoreError as exc:
        return _fail("export", str(exc))
    except BrokenPipeError:  # `mlop export ... | head`: the reader left, which is fine
        sys.stderr.close()
    return 0


def _chain(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if first is not None:
        yield first
    yield from rest


# -- mlop runs ---------------------------------------------------------------------------------------------


def _when(ms: int | float | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _runs(args: argparse.Namespace) -> int:
    from mlop._reader import RunReader, list_runs

    runs = list_runs(args.dir)
    runs.sort(key=lambda r: r.created_at or 0.0, reverse=True)  # newest first
    chosen: list[RunReader] = []
    for run in runs:
        keep = (args.project is None or run.project == args.project) and (
            args.status is None or run.status == args.status.upper()
        )
        if keep and (args.limit is None or len(chosen) < args.limit):
            chosen.append(run)
        else:
            run.close()
    rows = []
    for run in chosen:
        progress = run.progress()
        rows.append(
            {
                "project": run.project,
                "name": run.name,
                "id": run.id,
                "status": run.status,
                "steps": progress["steps"],
                "lastStep": progress["last_step"],
                "created": int(run.created_at * 1000) if run.created_at else None,
                "updated": progress["updated"],
                "tags": run.tags,
                "dir": str(run.dir),
            }
        )
        run.close()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        what = "matching" if args.project or args.status else ""
        print(f"no {what + ' ' if what else ''}mlop runs under {Path(args.dir or '.').resolve()}")
        return 0
    header = ("PROJECT", "NAME", "ID", "STATUS", "STEPS", "CREATED", "UPDATED", "DIR")
    table = [header]
    for row in rows:
        table.append(
            (
                row["project"],
                row["name"],
                row["id"],
                row["status"],
                str(row["steps"]),
                _when(row["created"]),
                _when(row["updated"]),
                row["dir"],
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _status(text: str) -> str:
    if text.upper() not in STATUSES:
        raise argparse.ArgumentTypeError(f"{text!r}: give one of {', '.join(STATUSES)}")
    return text.upper()


# -- the parser --------------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction[Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def _finish_tree(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand its help as its description, and remember on each which parser it is, so
    that a bad option prints the usage of the subcommand that got it."""
    parser.set_defaults(_parser=parser)
    for action in _subparsers(parser):
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            if sub.description is None and helps.get(name):
                sub.description = helps[name]
            _finish_tree(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlop", description="mlop: experiment tracking for machine learning"
    )
    parser.add_argument(
        "--version", action="store_true", help="print every mlop package's version and commit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = sub.add_parser(
        "export",
        help="print a run's logged values (or, for a media key, its files)",
        epilog="RUN is a run folder (.mlop/<project>/<run id>) or a run id found under --dir.",
    )
    export.add_argument("run", metavar="RUN", help="a run folder, or a run id")
    export.add_argument("key", metavar="KEY", nargs="?", default=None, help="only this key")
    export.add_argument("--key", dest="key_option", metavar="KEY", default=None, help="same as KEY")
    export.add_argument(
        "--format", choices=("jsonl", "json", "csv"), default="jsonl", help="output format (default: jsonl)"
    )
    export.add_argument("--dir", default=None, help="where to look for a run id (default: $MLOP_DIR or here)")
    export.set_defaults(func=_export)

    runs = sub.add_parser("runs", help="list the local runs under a directory, newest first")
    runs.add_argument(
        "--dir", default=None, help="the directory that holds .mlop (default: $MLOP_DIR or here)"
    )
    runs.add_argument("--project", default=None, help="only the runs of this project")
    runs.add_argument(
        "--status", type=_status, default=None, help=f"only runs of this status ({', '.join(STATUSES)})"
    )
    runs.add_argument(
        "--limit", type=_positive, default=None, metavar="N", help="at most N runs (the newest)"
    )
    runs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    runs.set_defaults(func=_runs)

    from mlop._online._commands import add_online_commands

    add_online_commands(sub)

    from mlop import _hooks

    _hooks.add_commands(sub)
    _finish_tree(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse names the top-level usage for these; the subcommand's is the useful one
        target: argparse.ArgumentParser = getattr(args, "_parser", parser)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        print(_version_text())
        return 0
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
