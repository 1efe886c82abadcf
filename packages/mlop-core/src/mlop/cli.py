"""The ``mlop`` command line: ``export`` and ``runs`` here, the online commands, and those plugins add."""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _commit(dist: importlib.metadata.Distribution) -> str:
    """The git commit a distribution was built from: from its checkout (editable) or its build info."""
    try:
        direct = dist.read_text("direct_url.json")
        source = json.loads(direct)["url"] if direct else None
    except (ValueError, KeyError):
        source = None
    if source and source.startswith("file://"):
        path = source[len("file://") :]
        try:
            out = subprocess.run(
                ["git", "-C", path, "rev-parse", "--short=12", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.returncode == 0:
                dirty = subprocess.run(
                    ["git", "-C", path, "status", "--porcelain", "--", "."],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout.strip()
                return out.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
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


def _rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from mlop._reader import open_run
    from mlop._values import wire_number

    with open_run(args.run_dir) as run:
        for row in run.metrics(args.key):  # NaN and the infinities as the protocol writes them: valid JSON
            yield {**row, "value": wire_number(row["value"])}
        yield from run.data(args.key)


def _export(args: argparse.Namespace) -> int:
    from mlop._exceptions import StoreError

    try:
        rows = _rows(args)
        if args.format == "jsonl":
            for row in rows:
                sys.stdout.write(json.dumps(row) + "\n")
        else:
            writer = csv.DictWriter(
                sys.stdout, fieldnames=["key", "step", "time", "type", "value"], extrasaction="ignore"
            )
            writer.writeheader()
            for row in rows:
                value = row["value"]
                writer.writerow(
                    {
                        **row,
                        "type": row.get("type", "metric"),
                        "value": value if isinstance(value, (int, float, str)) else json.dumps(value),
                    }
                )
    except StoreError as exc:
        print(f"mlop export: {exc}", file=sys.stderr)
        return 1
    return 0


def _runs(args: argparse.Namespace) -> int:
    from mlop._reader import list_runs

    runs = list_runs(args.dir)
    if not runs:
        print(f"no mlop runs under {Path(args.dir or '.').resolve()}")
        return 0
    header = ("PROJECT", "NAME", "ID", "STATUS", "STEPS", "UPDATED", "DIR")
    table = [header]
    for run in runs:
        progress = run.progress()
        updated = progress["updated"]
        when = (
            datetime.datetime.fromtimestamp(updated / 1000).strftime("%Y-%m-%d %H:%M:%S") if updated else "-"
        )
        table.append((run.project, run.name, run.id, run.status, str(progress["steps"]), when, str(run.dir)))
        run.close()
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlop", description="mlop: experiment tracking for machine learning"
    )
    parser.add_argument(
        "--version", action="store_true", help="print every mlop package's version and commit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = sub.add_parser("export", help="print a run's logged values")
    export.add_argument("run_dir", help="the run directory (.mlop/<project>/<run id>)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--key", default=None, help="only this key")
    export.set_defaults(func=_export)

    runs = sub.add_parser("runs", help="list the runs under a directory")
    runs.add_argument("--dir", default=None, help="the directory that holds .mlop (default: here)")
    runs.set_defaults(func=_runs)

    from mlop._online._commands import add_online_commands

    add_online_commands(sub)

    from mlop import _hooks

    _hooks.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
