"""`mlop ui` started as a user starts it, for the tests that drive it: its process and the URL it prints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def mlop_ui(
    runs_dir: Path, *args: str, env: dict[str, str] | None = None, stop: int = signal.SIGINT
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``mlop ui --dir RUNS_DIR --no-browser ARGS``; yield it and the URL it printed
    (``http://127.0.0.1:PORT/ui/#key=KEY``); on the way out stop it with ``stop`` (Ctrl-C by default),
    killing it after 30 s."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    cmd = [sys.executable, "-m", "mlop.cli", "ui", "--dir", str(runs_dir), "--no-browser", *args]
    ui = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert ui.stdout is not None
        url = ""
        while "#key=" not in url:
            url = ui.stdout.readline()
            assert url, "mlop ui ended before printing its URL"
        yield ui, url.strip()
    finally:
        if ui.poll() is None:
            ui.send_signal(stop)
            try:
                ui.wait(30)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()
        if ui.stdout is not None:
            ui.stdout.close()
