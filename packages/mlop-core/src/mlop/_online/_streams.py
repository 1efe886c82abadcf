"""The uploader's streams: each reads some kinds from a run's store and sends them to their routes.

A stream's place in the store is its acknowledgement ``(seq, n)``: every record of its kinds before
``seq`` and the first ``n`` items of record ``seq`` reached the server. It is kept in the store's ``acks``
table, so a restarted uploader (or ``mlop sync``) goes on from there and never sends an acknowledged item
again. Before a batch is sent, its end is written as the stream's *in-flight* mark; a restarted uploader
resends exactly that batch first, with the same ``Idempotency-Key``, so a batch whose reply was lost is
applied once by a server that honours the key.
"""

from __future__ import annotations

import dataclasses
import json
import json.encoder
import logging
import math
import re
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._exceptions import AuthError, ServerError
from mlop._online._server import Abandoned, ServerInterface
from mlop._store import Store, decode_record

if TYPE_CHECKING:
    from mlop._online._types import StreamOwner

__all__ = ["STREAMS", "Batch", "Stream", "pending_by_stream", "pending_items", "protocol_tags", "run_file"]

logger = logging.getLogger(__name__)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

Position = tuple[int, int]
_MAX_TAGS: Final = 50
FINAL: Final = frozenset({"COMPLETED", "FAILED", "TERMINATED", "CANCELLED"})
_LOG_TYPES: Final = frozenset(
    {"METRIC", "IMAGE", "VIDEO", "AUDIO", "FILE", "TEXT", "ARTIFACT", "HISTOGRAM", "TABLE", "DATA"}
)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bool):
        return int(value)
    return value


def _strict_encoder() -> Callable[[Any], str]:
    """A compact JSON encoder that refuses NaN and infinities (the caller converts them then).

    The C encoder is built once rather than per call as ``json.dumps`` does: about a fifth faster on
    the uploader's hottest line.
    """
    fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback

    def default(value: Any) -> Any:
        raise TypeError(type(value).__name__)

    try:
        ascii_string = json.encoder.encode_basestring_ascii
        encode = make(None, default, ascii_string, None, ":", ",", False, False, False)
    except TypeError:  # another interpreter's C encoder: use the portable one
        return fallback

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps = _strict_encoder()


@dataclasses.dataclass
class Batch:
    """Items read from the store, between two positions."""

    start: Position
    end: Position
    items: list[tuple[int, str, Any]]
    full: bool
    part: str = ""  # a part of a refused batch, sent alone (see Stream.deliver): "", "a", "ab", ...

    @property
    def first_seq(self) -> int:
        return self.items[0][0] if self.items else self.start[0]


class Stream:
    """Reads its kinds from the store in batches and sends them; one thread per stream.

    Subclasses set ``name`` and ``kinds`` and implement :meth:`send`.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    max_items: ClassVar[int] = 20_000
    max_bytes: ClassVar[int] = 4 << 20  # about, by :meth:`weight`: below the body limits of servers

    def __init__(self, uploader: StreamOwner, store: Store | None = None) -> None:
        self.up = uploader
        self.server: ServerInterface = uploader.server
        # The live uploader reads and sends on two threads, each with its own connection; a caller that
        # does both in one thread (mlop sync's one pass) lends one connection, which it closes itself.
        self._own = store is None
        if store is None:
            self.store = Store(uploader.store_path)  # the reading thread's connection
            self.book = Store(uploader.store_path)  # the sending thread's: acknowledgements and failures
        else:
            self.store = self.book = store
        acks = self.store.acks()
        self.ack: Position = acks.get(self.name, (0, 0))
        inflight = acks.get(self.name + "/inflight")
        self.inflight: Position | None = inflight if inflight and inflight > self.ack else None
        self.cursor: Position = self.ack  # the end of the last batch read (sent or about to be)
        self._partial: tuple[int, list[Any]] | None = None  # the record the last batch ended inside
        self._scanned = 0  # no record of these kinds after the cursor has a seq <= this
        self.caught = 0  # every record of these kinds with seq <= caught is acknowledged
        self.sent_items = 0

    def close(self) -> None:
        if self._own:
            self.store.close()
            self.book.close()

    # -- reading ----------------------------------------------------------------------------------------

    def read(self) -> Batch | None:
        """The next batch after the cursor; None when nothing is pending.

        The first batch after a restart ends where the batch that was in flight ended, so that it is
        sent again exactly, with the same key.
        """
        limit = self.inflight if self.cursor == self.ack else None
        a_seq, a_n = self.cursor
        items: list[tuple[int, str, Any]] = []
        end = self.cursor
        full = False
        size = 0
        visible = self.store.last_seq()
        for seq, kind, records, count in self._records(max(a_seq - 1, self._scanned)):
            first = a_n if seq == a_seq else 0
            for index in range(first, len(records)):
                if limit is not None:
                    if (seq, index) >= limit:
                        full = True
                        break
                elif items and (len(items) >= self.max_items or size >= self.max_bytes):
                    full = True
                    break
                else:
                    size += self.weight(records[index])
                items.append((seq, kind, records[index]))
                end = (seq, index + 1)
            if full:
                self._partial = (seq, records)
                break
            # A record that could not be decoded (or lost items when it was packed) is passed whole.
            end = (seq, max(len(records), count))
        if not full:  # everything of these kinds up to ``visible`` is read: never scan it again
            self._scanned = max(self._scanned, visible)
        if end == self.cursor:
            return None
        if limit is not None:
            full = True
        start, self.cursor = self.cursor, end
        return Batch(start, end, items, full)

    def _records(self, after_seq: int) -> Iterator[tuple[int, str, list[Any], int]]:
        """This stream's records after ``after_seq``, in order, read lazily, with their item counts.

        The rowid range is scanned in order (``+kind`` keeps SQLite off the (kind, seq) index, which for
        several kinds would sort every remaining payload first), and a record that the last batch ended
        inside is not unpacked again. A record that cannot be decoded is reported once and yields no
        items: it is skipped, and everything after it is sent.
        """
        marks = ",".join("?" * len(self.kinds))
        cursor = self.store._db.execute(  # the Store class reads several kinds through a sort
            f"SELECT seq, kind, payload, count FROM records WHERE seq > ? AND +kind IN ({marks}) "
            "ORDER BY seq",
            (after_seq, *self.kinds),
        )
        try:
            for seq, kind, payload, count in cursor:
                partial = self._partial
                if partial is not None and partial[0] == seq:
                    yield seq, kind, partial[1], count
                    continue
                items = decode_record(self.store.path, seq, kind, payload)
                if items is None:
                    self.up.corrupt_record(self.name, seq, kind)
                yield seq, kind, items or [], count
        finally:
            cursor.close()

    def weight(self, item: Any) -> int:
        """About how many bytes an item takes on the wire (for the batch's size bound)."""
        return 100

    def key(self, batch: Batch) -> str:
        (s0, n0), (s1, n1) = batch.start, batch.end
        return f"{self.up.upload_id}-{self.name}-{s0}.{n0}-{s1}.{n1}{batch.part}"

    def begin(self, batch: Batch) -> None:
        """Mark a batch as in flight before its first attempt."""
        if self.inflight != batch.end:
            self.book.set_ack(self.name + "/inflight", *batch.end)
            self.inflight = batch.end

    def acknowledge(self, batch: Batch) -> None:
        self.book.set_ack(self.name, *batch.end)
        self.ack = batch.end
        self.inflight = None
        self.sent_items += len(batch.items)

    def fail(self, batch: Batch, exc: ServerError, what: str) -> None:
        """Record a permanent refusal of a batch and report it once, loudly; the batch is then skipped."""
        # What the server refused may hold text SQLite cannot store (a lone surrogate): escape it.
        message = f"{exc} ({what})".encode("utf-8", "backslashreplace").decode("utf-8")
        self.book.add_failure(self.name, batch.first_seq, exc.status_code, message)
        self.up.report_failure(self.name, message)

    # -- sending ----------------------------------------------------------------------------------------

    def prepare(self, batch: Batch) -> Any:
        """Encode a batch; runs on the stream's reading thread while the batch before it is sent."""
        return None

    def send(self, batch: Batch, prepared: Any) -> None:
        """Send one batch; return when the server acknowledged it.

        Raises:
            Abandoned: the uploader is stopping.
            ServerError: a permanent refusal (the caller records it and skips the batch).
        """
        raise NotImplementedError

    def describe(self, batch: Batch) -> str:
        return f"{len(batch.items)} {self.name} items from record {batch.first_seq}"

    def deliver(self, batch: Batch, prepared: Any) -> None:
        """Send a batch and record its acknowledgement.

        A batch the server refuses for good is split in halves, each sent alone (with its own key), down
        to the single items it refuses: those are recorded and reported, everything else is sent. A
        restarted uploader resends a batch in flight and splits it the same way, with the same keys.

        Raises:
            Abandoned: the uploader is stopping, or the server refused the key (then the uploader says
                so once); the batch stays in flight for the next uploader.
        """
        self.begin(batch)
        try:
            self._send_or_split(batch, prepared)
        except AuthError as exc:
            self.up.key_refused(exc)
            raise Abandoned(self.name) from None
        self.acknowledge(batch)

    def _send_or_split(self, batch: Batch, prepared: Any) -> None:
        try:
            self.send(batch, prepared)
        except AuthError:
            raise
        except ServerError as exc:
            if len(batch.items) < 2 or exc.status_code is None or not 400 <= exc.status_code < 500:
                self.fail(batch, exc, self.describe(batch))
                return
            half = len(batch.items) // 2
            for part, items in (("a", batch.items[:half]), ("b", batch.items[half:])):
                piece = dataclasses.replace(batch, items=items, part=batch.part + part)
                self._send_or_split(piece, self.prepare(piece))

    def call(self, path: str, body: Any, key: str) -> Any:
        return self.server.call("api", path, body, idempotency_key=key, stop=self.up.stop)

    def register(self, names: dict[str, list[str]], key: str) -> None:
        """Register the keys of a batch that the server has not seen yet (``logName/add``)."""
        self.up.register(names, key, self.book)


def _metric_lines(items: list[tuple[int, str, Any]], names: dict[str, list[str]], known: set[str]) -> bytes:
    out: list[str] = []
    fresh: dict[str, None] = {}
    for _seq, _kind, (step, when, values) in items:
        if not values:
            continue
        try:
            data = _dumps(values)
        except (ValueError, TypeError):
            data = _dumps({str(k): _number(v) for k, v in values.items()})
        out.append(f'{{"time":{_ms(when)},"step":{int(step)},"data":{data}}}\n')
        for key in values:
            if key not in known:
                fresh[key] = None
    if fresh:
        names["METRIC"] = list(fresh)
    return "".join(out).encode()


class MetricsStream(Stream):
    """Numbers and system metrics to ``/ingest/metrics``."""

    name = "metrics"
    kinds = ("metrics", "system")

    def weight(self, item: Any) -> int:
        return 48 + 32 * len(item[2])

    def prepare(self, batch: Batch) -> Any:
        names: dict[str, list[str]] = {}
        return names, _metric_lines(batch.items, names, self.up.known("METRIC"))

    def describe(self, batch: Batch) -> str:
        steps = [item[0] for _seq, _kind, item in batch.items]
        keys = sorted({key for _seq, _kind, item in batch.items for key in item[2]})
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        return f"{len(steps)} metric lines, steps {min(steps)} to {max(steps)}, keys {shown}"

    def send(self, batch: Batch, prepared: Any) -> None:
        names, lines = prepared
        if names:
            self.register(names, self.key(batch))
        if lines:
            self.server.ingest("metrics", lines, self.key(batch), stop=self.up.stop)


def _text(value: Any) -> str:
    """A console line as valid Unicode: a lone surrogate (undecodable output) becomes U+FFFD."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def protocol_tags(tags: list[str]) -> list[str]:
    """At most 50 tags and at most one ``group:*`` tag, as the protocol allows."""
    out: list[str] = []
    group = False
    for tag in tags:
        if tag.startswith("group:"):
            if group:
                continue
            group = True
        out.append(tag)
    return out[:_MAX_TAGS]


def data_log_type(data_type: str) -> str:
    """The ``logType`` a data line's key is registered with."""
    upper = str(data_type).upper()
    return upper if upper in _LOG_TYPES else "DATA"


class DataStream(Stream):
    """Histograms, tables and string series to ``/ingest/data``."""

    name = "data"
    kinds = ("data",)
    max_items = 2_000

    def weight(self, item: Any) -> int:
        value = item[4]
        return 120 + (len(value) if isinstance(value, str) else len(repr(value)))

    def prepare(self, batch: Batch) -> Any:
        names: dict[str, dict[str, None]] = {}
        out: list[str] = []
        for _seq, _kind, (step, when, key, data_type, value) in batch.items:
            log_type = data_log_type(data_type)
            if key not in self.up.known(log_type):
                names.setdefault(log_type, {})[key] = None
            data = value if isinstance(value, str) else json.dumps(value)
            line = {"time": _ms(when), "step": int(step), "logName": key, "dataType": data_type, "data": data}
            out.append(json.dumps(line) + "\n")
        return {t: list(n) for t, n in names.items()}, "".join(out).encode()

    def send(self, batch: Batch, prepared: Any) -> None:
        names, lines = prepared
        if names:
            self.register(names, self.key(batch))
        self.server.ingest("data", lines, self.key(batch), stop=self.up.stop)


class LogsStream(Stream):
    """Console lines to ``/ingest/logs``."""

    name = "logs"
    kinds = ("logs",)

    def weight(self, item: Any) -> int:
        return 96 + len(str(item[3]))

    def prepare(self, batch: Batch) -> Any:
        out = [
            json.dumps(
                {"time": _ms(when), "message": _text(message), "lineNumber": line, "logType": log_type}
            )
            + "\n"
            for _seq, _kind, (when, line, log_type, message) in batch.items
        ]
        return "".join(out).encode()

    def send(self, batch: Batch, prepared: Any) -> None:
        self.server.ingest("logs", prepared, self.key(batch), stop=self.up.stop)


def run_file(run_dir: Path, recorded: object) -> Path | None:
    """The file a ``files`` record points at, when it is a regular file inside the run directory.

    A run folder may come from anyone (``mlop sync`` of a folder someone sent): a record that points out
    of it (``../``, an absolute path, a symbolic link that leads out) must never upload what it names.
    """
    if not isinstance(recorded, str) or not recorded:
        return None
    try:
        root = run_dir.resolve(strict=True)
        path = (root / recorded).resolve(strict=True)
        info = path.stat()
    except (OSError, RuntimeError):  # missing, unreadable, a loop of links
        return None
    if not path.is_relative_to(root) or not stat.S_ISREG(info.st_mode):
        return None
    return path


class FilesStream(Stream):
    """Media and files: ask ``/files`` for upload URLs, then PUT each file from disk, a few at a time."""

    name = "files"
    kinds = ("files",)
    max_items = 16

    def __init__(self, uploader: StreamOwner, store: Store | None = None) -> None:
        super().__init__(uploader, store)
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        super().close()

    def send(self, batch: Batch, prepared: Any) -> None:
        names: dict[str, dict[str, None]] = {}
        entries: list[dict[str, Any]] = []
        paths: dict[tuple[str, str], Path] = {}
        for _seq, _kind, (step, when, key, info) in batch.items:
            path = run_file(self.up.files_dir, info.get("path"))
            if path is None:
                self._refuse(batch, info.get("path"))
                continue
            log_type = data_log_type(info.get("logType", "FILE"))
            if key not in self.up.known(log_type):
                names.setdefault(log_type, {})[key] = None
            entry: dict[str, Any] = {
                "fileName": info["fileName"],
                "fileSize": int(info.get("fileSize", 0)),
                "fileType": str(info.get("fileType", "")),
                "time": _ms(when),
                "logName": key,
                "step": int(step),
            }
            if info.get("sampleIndex") is not None:
                entry["sampleIndex"] = int(info["sampleIndex"])
            if info.get("caption") is not None:
                entry["caption"] = str(info["caption"])
            entries.append(entry)
            paths[(key, info["fileName"])] = path
        if not entries:
            return
        if names:
            self.register({t: list(n) for t, n in names.items()}, self.key(batch))
        answer = self.server.call(
            "ingest", "/files", {"files": entries}, idempotency_key=self.key(batch), stop=self.up.stop
        )
        uploads: list[tuple[str, Path]] = []
        for key, urls in (answer or {}).items():
            for pair in urls:
                for file_name, url in pair.items():
                    path = paths.get((key, file_name))
                    if path is not None:
                        uploads.append((url, path))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, self.up.workers), thread_name_prefix="mlop-upload"
            )
        futures = [self._pool.submit(self._put, batch, url, path) for url, path in uploads]
        for future in futures:
            future.result()

    def _refuse(self, batch: Batch, recorded: object) -> None:
        message = (
            f"a files record of this run points at {recorded!r}, which is not a regular file inside the "
            f"run directory {self.up.files_dir} (it is missing, outside it or a link out of it); not uploaded"
        )
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        logger.warning("mlop: %s", message)
        self.book.add_failure(self.name, batch.first_seq, None, message)

    def _put(self, batch: Batch, url: str, path: Path) -> None:
        try:
            self.server.retry(lambda: self.server.put_file(url, path), stop=self.up.stop, what=path.name)
        except ServerError as exc:
            self.fail(batch, exc, f"the file {path.name}")


class ControlStream(Stream):
    """Config, tags, graph, alerts and status, one request each, in the order they were logged.

    A final status is sent only once every other stream has sent what was logged before it.
    """

    name = "control"
    kinds = ("config", "tags", "graph", "alert", "status")
    max_items = 1

    def send(self, batch: Batch, prepared: Any) -> None:
        key = self.key(batch)
        for seq, kind, item in batch.items:
            handler: Callable[[int, Any, str], None] = getattr(self, f"_{kind}")
            handler(seq, item, key)

    def describe(self, batch: Batch) -> str:
        kinds = sorted({kind for _seq, kind, _item in batch.items})
        return f"the {', '.join(kinds)} update of record {batch.first_seq}"

    def _config(self, seq: int, item: Any, key: str) -> None:
        _when, delta = item
        body = {"runId": self.server.run_id, "config": json.dumps(delta)}
        self.call("/api/runs/config/update", body, key)

    def _tags(self, seq: int, item: Any, key: str) -> None:
        _when, tags = item
        body = {"runId": self.server.run_id, "tags": protocol_tags([str(t) for t in tags])}
        self.call("/api/runs/tags/update", body, key)

    def _graph(self, seq: int, item: Any, key: str) -> None:
        _when, graph = item
        self.call("/api/runs/modelGraph/create", {"runId": self.server.run_id, "graph": graph}, key)

    def _alert(self, seq: int, item: Any, key: str) -> None:
        _when, alert = item
        if not alert.get("remote", True):
            return
        webhook = alert.get("url") or self.up.webhook
        if webhook:
            text = f"*{alert.get('title', '')}* ({alert.get('level', 'INFO')})\n{alert.get('body', '')}"
            self.server.retry(
                lambda: self.server.post_webhook(webhook, {"text": text, "content": text}),
                stop=self.up.stop,
                what="webhook",
            )
            return
        body = {
            "runId": self.server.run_id,
            "alert": {
                "timestamp": int(alert.get("timestamp") or _ms(_when)),
                "level": str(alert.get("level", "INFO")),
                "title": str(alert.get("title", "")),
                "body": str(alert.get("body", "")),
                "email": bool(alert.get("email", False)),
                "url": None,
            },
        }
        self.server.call("py", "/api/runs/alert", body, idempotency_key=key, stop=self.up.stop)

    def _status(self, seq: int, item: Any, key: str) -> None:
        _when, status, metadata = item
        if status not in FINAL:
            self.server.status(status, metadata, key, stop=self.up.stop)
            return
        self.up.wait_drained(seq)
        try:
            self.server.status(status, metadata, key, stop=self.up.stop)
        except AuthError:
            raise
        except ServerError:
            self.up.final_sent(status)
            raise
        self.up.final_sent(status)


STREAMS: Final[tuple[type[Stream], ...]] = (MetricsStream, DataStream, LogsStream, FilesStream, ControlStream)


def pending_items(store: Store) -> tuple[int, int]:
    """How many items of the uploaded kinds the store holds, and how many of them are acknowledged."""
    counts = pending_by_stream(store).values()
    return sum(total for total, _done in counts), sum(done for _total, done in counts)


def pending_by_stream(store: Store) -> dict[str, tuple[int, int]]:
    """Per stream (metrics, data, logs, files, control): items held, and items acknowledged."""
    acks = store.acks()
    db = store._db  # aggregate queries the Store class has no method for
    out: dict[str, tuple[int, int]] = {}
    for stream in STREAMS:
        total = done = 0
        a_seq, a_n = acks.get(stream.name, (0, 0))
        marks = ",".join("?" * len(stream.kinds))
        where = f"FROM records WHERE kind IN ({marks})"
        total += db.execute(f"SELECT COALESCE(SUM(count), 0) {where}", stream.kinds).fetchone()[0]
        done += db.execute(
            f"SELECT COALESCE(SUM(count), 0) {where} AND seq < ?", (*stream.kinds, a_seq)
        ).fetchone()[0]
        row = db.execute(f"SELECT count {where} AND seq = ?", (*stream.kinds, a_seq)).fetchone()
        if row is not None:
            done += min(a_n, row[0])
        out[stream.name] = (int(total), int(done))
    return out
