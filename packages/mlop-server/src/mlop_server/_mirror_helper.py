"""``mlop ui``'s helper process: sends the runs its parent gives it, with an interpreter lock of its own.

Started by :class:`mlop_server._mirror.Mirror` for passes of many runs. Reads JSON lines on stdin: first
``{"root", "mirrors", "url", "key"}``, then ``{"runs": [...]}`` for each pass, and answers each pass with one
line ``{"answers": [{"run", "copied", "done"}, ...]}`` (``done``: the run's signature once it has ended and
was sent whole). It stops when its stdin closes; Ctrl-C is its parent's to handle.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from mlop_server._mirror import Mirror

__all__ = ["main"]


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the parent, which stops this
    first = sys.stdin.readline()
    if not first:
        return 0
    config = json.loads(first)
    root, mirrors = Path(config["root"]), Path(config["mirrors"])
    mirror = Mirror(root, mirrors, config["url"], config["key"], split_at=None)
    try:
        for line in sys.stdin:
            runs = [Path(run) for run in json.loads(line).get("runs", [])]
            copied = mirror.sync_runs(runs)
            answers = [
                {"run": str(run), "copied": new, "done": mirror.done(run)}
                for run, new in zip(runs, copied, strict=True)
            ]
            sys.stdout.write(json.dumps({"answers": answers}) + "\n")
            sys.stdout.flush()
    finally:
        mirror.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
