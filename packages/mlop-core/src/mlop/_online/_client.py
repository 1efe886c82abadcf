"""The training process's side of the online client: start the uploader process, hear from it, finish it.

Nothing here touches the network or imports httpx: the training process only writes its store, and the
uploader process (:mod:`mlop._online._uploader`) sends it. The key goes to that process through a pipe
(its stdin), never its command line, its environment or a file.

What a script sees when the server cancels its run: the run finishes with status ``CANCELLED`` on a
background thread (``run.status == "CANCELLED"``), later ``run.log()`` calls do nothing (warned once), and
the script itself goes on; a loop that should stop can check ``run.status``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from mlop._exceptions import RunExistsError
from mlop._online._options import Options
from mlop._settings import public_urls

if TYPE_CHECKING:
    from mlop._op import Op

__all__ = ["UploaderHandle", "announce", "page_url", "spawn_uploader", "sync_command"]

logger = logging.getLogger(__name__)

_STOP_WAIT: Final = 5.0


def announce(text: str) -> None:
    """Tell the user something the issue asks to print (the run's URL, the `mlop sync` command).

    Written past console capture when it wraps sys.stderr: mlop's own notices are not the run's output.
    """
    stream = getattr(sys.stderr, "_mlop_stream", sys.stderr)
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # a closed stderr: nothing to tell
        pass


def page_url(url: object) -> str | None:
    """The run's page for a browser, from a create answer's ``url``.

    The hosted service answers its web app's run page, and mlop-server its dashboard's (``/ui/#/run/ID``);
    an mlop-server from before that answered the read API's URL (``/api/runs/ID``), which a browser cannot
    open (401), so that one becomes the dashboard's page of the same run.
    """
    if not isinstance(url, str) or not url:
        return None
    parts = urllib.parse.urlsplit(url)
    old = re.fullmatch(r"(.*)/api/runs/(\d+)/?", parts.path)
    if old is None:
        return url
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, f"{old.group(1)}/ui/", "", f"/run/{old.group(2)}")
    )


def sync_command(run_dir: Path) -> str:
    return f"mlop sync {shlex.quote(str(run_dir))}"


class UploaderHandle:
    """The uploader process of one run, as the training process sees it.

    Args:
        op: the run.
        proc: the uploader process, started with pipes on stdin and stdout.
    """

    def __init__(self, op: Op, proc: subprocess.Popen[bytes]) -> None:
        self._op = op
        self._proc = proc
        self._stdin: IO[bytes] | None = proc.stdin
        self.run_info: dict[str, Any] | None = None
        self.conflict: str | None = None
        self.outcome: dict[str, Any] | None = None
        self.cancelled = False
        self.refused: str | None = None  # the server refused the key: the uploader said so, and stopped
        self._answered = threading.Event()
        self._late = False
        self._resumed_elsewhere = False  # resume=True where the run's local store is not (set by start)
        self._done = False
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="mlop-uploader-events", daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"<UploaderHandle pid={self._proc.pid}>"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self._on_event(event)
        finally:
            self._answered.set()
            stdout.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "run":
            self.run_info = event
            self._op.url = page_url(event.get("url"))
            with self._lock:
                late = self._late
                self._answered.set()
            if late and self._op.url:
                announce(f"mlop: run {self._op.name} is now on the server: {self._op.url}")
            if late:
                self._continue_steps(late=True)
        elif kind == "conflict":
            self.conflict = str(event.get("message"))
            with self._lock:
                late = self._late
                self._answered.set()
            if late:
                logger.error("mlop: %s; this run stays local (%s)", self.conflict, self._op.dir)
        elif kind == "cancelled":
            self.cancelled = True
            metadata = {
                "type": "Cancelled",
                "message": "the run was cancelled on the server",
                "frames": [],
                "trace": "",
            }
            # On its own thread, so that this one goes on reading what the uploader says while it ends.
            threading.Thread(
                target=self._op._end, args=("CANCELLED", metadata), name="mlop-cancel", daemon=False
            ).start()
        elif kind == "refused":
            self.refused = str(event.get("message"))
            with self._lock:
                self._answered.set()
        elif kind == "log":
            logger.log(int(event.get("level", logging.WARNING)), "%s", event.get("message", ""))
        elif kind == "done":
            self.outcome = event

    def _continue_steps(self, *, late: bool) -> None:
        """Resumed where its local store is not: count steps on after the server's last one.

        Only our server says what that step is (``lastStep`` in its resume answer, an extra field); with a
        server that does not, log() without a step starts at 0 as before. An answer that comes after
        init() returned is used only while nothing has been logged yet.
        """
        op = self._op
        info = self.run_info or {}
        last = info.get("lastStep")
        if not self._resumed_elsewhere or not info.get("resumed") or type(last) is not int or last < 0:
            return
        if op._step == 0:
            op._step = last + 1
        elif late and op._step <= last:
            logger.warning(
                "mlop: the server's answer came after run %s had logged up to step %d; the server holds "
                "steps up to %d, so values logged without a step may repeat steps it has",
                op.name,
                op._step - 1,
                last,
            )

    def wait_created(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server's answer to the run's creation."""
        answered = self._answered.wait(timeout)
        with self._lock:
            answered = answered or self._answered.is_set()
            if not answered:
                self._late = True
        return answered

    def _tell(self, line: bytes | None) -> None:
        stdin = self._stdin
        if stdin is None:
            return
        try:
            if line is not None:
                stdin.write(line)
                stdin.flush()
            else:
                self._stdin = None
                stdin.close()
        except (OSError, ValueError):  # the uploader is gone already
            self._stdin = None

    def start(self, *, new_run: bool) -> None:
        """Let the uploader create the run, and wait for it at most ``x_init_timeout`` seconds.

        Raises:
            RunExistsError: ``run_id`` names a run that exists on the server and neither ``resume`` nor
                ``shared`` was asked for. The run is undone (its directory removed when this init made it).
        """
        op = self._op
        settings = op.settings
        self._resumed_elsewhere = new_run and settings.resume
        self._tell(b"start\n")
        answered = self.wait_created(settings.x_init_timeout)
        if answered:
            self._continue_steps(late=False)
        if self.conflict:
            self.stop()
            _undo(op, new_run)
            raise RunExistsError(self.conflict)
        url = page_url((self.run_info or {}).get("url"))
        if url:
            announce(f"mlop: run {op.name}: {url}")
        elif self.refused:
            pass  # the uploader said why, and how to send the run later
        elif answered and self.run_info is None:
            announce(
                f"mlop: the uploader of run {op.name} ended early; the run goes on locally. Send it later "
                f"with:\n    {sync_command(op.dir)}"
            )
        elif not answered:
            announce(
                f"mlop: the server ({settings.urls()['url_api']}) did not answer within "
                f"{settings.x_init_timeout:g} s; the run goes on and is created on the server in the "
                "background"
            )

    def stop(self) -> None:
        """End the uploader now, sending nothing more (a refused init)."""
        self._tell(None)
        self._terminate()

    def _terminate(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if threading.current_thread() is not self._reader:
            self._reader.join(_STOP_WAIT)

    def finish(self, timeout: float) -> None:
        """Let the uploader send the rest, for at most ``timeout`` seconds; never hangs.

        What is not sent by then stays in the run's store, and the `mlop sync` command that sends it is
        printed.
        """
        with self._lock:
            if self._done:
                return
            self._done = True
        self._tell(b"finish\n")
        self._tell(None)
        try:
            self._proc.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            logger.debug("mlop: the uploader did not finish within %s s; stopping it", timeout)
        self._terminate()
        outcome = self.outcome or {}
        if self.cancelled or outcome.get("cancelled") or self.conflict or self.refused:
            return  # said already
        if self._op.url:
            announce(f"mlop: run {self._op.name} {str(self._op.status).lower()}: {self._op.url}")
        if not outcome.get("complete"):
            announce(
                f"mlop: not everything of run {self._op.name} reached the server within {timeout:g} s; "
                f"it is kept in {self._op.dir}. Send it with:\n    {sync_command(self._op.dir)}"
            )


def _spawn(run_dir: Path, options: Options) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLOP_API_TOKEN", "MLOP_API_KEY")}
    # The uploader imports the same mlop as this process, wherever it was imported from.
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the mlop package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlop._online._uploader", str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        close_fds=True,
        start_new_session=True,  # Ctrl-C in the terminal reaches the script, not its uploader
    )
    assert proc.stdin is not None
    proc.stdin.write((options.to_json() + "\n").encode())
    proc.stdin.flush()
    return proc


def spawn_uploader(op: Op, *, new_run: bool) -> UploaderHandle:
    """Start the uploader process of an online run; it creates the run once :meth:`UploaderHandle.start`
    says so (after the run's environment is recorded).

    Started before console capture, so that the uploader's own messages go to the real stderr.

    Args:
        op: the run, with its store written.
        new_run: the run directory was made by this ``init()``.
    """
    settings = op.settings
    check = bool(settings.run_id) and not settings.resume and not settings.shared and new_run
    options = Options.from_settings(settings, check_exists=check)
    if not settings.api_key:
        logger.warning("mlop: online without an API key; run `mlop login` or set MLOP_API_TOKEN")
    op._store.set_meta({"server_urls": public_urls(settings.urls())})
    return UploaderHandle(op, _spawn(op.dir, options))


def _undo(op: Op, new_run: bool) -> None:
    """Take back a run that init() refuses: stop its services, close it, forget it."""
    from mlop import _runs

    for service in reversed(op._services):
        try:
            service.stop()
        except Exception:  # broad: a service that fails to stop must not hide the refusal
            logger.exception("mlop could not stop %r", service)
    op._finished = True
    op._writer.close()
    op._store.close()
    _runs.forget(op)
    if new_run:
        shutil.rmtree(op.dir, ignore_errors=True)
