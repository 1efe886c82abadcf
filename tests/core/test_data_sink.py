"""The media path under load: copies that are really copies, one encoding per value, back-pressure."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

import mlop
from mlop._data._buffers import copy_array
from mlop._loggable import Items, MediaSink


def test_mid_sized_copies_do_not_share_memory_with_the_source() -> None:
    sources = [np.full((256, 256, 3), i, dtype=np.uint8) for i in range(120)]  # spans several slabs
    copies = [copy_array(s) for s in sources]
    for source in sources:
        source[:] = 255
    for i, copy in enumerate(copies):
        assert copy.shape == (256, 256, 3) and copy.dtype == np.uint8 and copy.flags.c_contiguous
        assert (copy == i).all()
    odd = np.arange(30_001, dtype=np.float64)[::-1]  # not contiguous, odd size
    np.testing.assert_array_equal(copy_array(odd), odd)


def test_logging_one_image_at_many_steps_encodes_once_and_stores_once(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    image = mlop.Image(array)
    array[:] = 0
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    for _ in range(3):
        run.log({"img": image})
    run.finish()
    reader = mlop.open_run(run.dir)
    rows = list(reader.media("img"))
    reader.close()
    assert sorted(r["step"] for r in rows) == [0, 1, 2]
    assert len({r["path"] for r in rows}) == 1
    with PILImage.open(rows[0]["path"]) as stored:
        assert (np.asarray(stored) != 0).any()
    assert image.to_bytes() == Path(rows[0]["path"]).read_bytes()


def test_past_the_byte_bound_the_caller_encodes_its_own_value_instead_of_waiting(tmp_path: Path) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append((kind, item)), max_pending=100, workers=1)
    release = threading.Event()

    def slow() -> Items:
        release.wait(10)
        return [("data", "first")]

    sink.defer(slow, size=80)
    encoded_on: list[threading.Thread] = []

    def second() -> Items:
        encoded_on.append(threading.current_thread())
        return [("data", "second")]

    # 80 + 80 bytes would pass the limit of 100: the caller encodes the second value itself, at once,
    # while the first still holds the only worker (the old sink made it wait for that worker).
    caller = threading.Thread(target=sink.defer, args=(second, 80))
    caller.start()
    caller.join(5)
    assert not caller.is_alive(), "the caller waited for the backlog"
    assert encoded_on == [caller]
    assert sink.pending_bytes == 80
    assert added == []  # encoded, but stored after the first value, in logging order
    release.set()
    sink.close()
    assert added == [("data", "first"), ("data", "second")]
    assert sink.pending_bytes == 0


def test_one_value_larger_than_the_limit_still_passes(tmp_path: Path) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append(item), max_pending=10)
    sink.defer(lambda: [("data", "big")], size=1_000)
    sink.close()
    assert added == ["big"]


def test_a_value_that_fails_to_encode_is_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append(item))

    def broken() -> Items:
        raise RuntimeError("bad frame")

    sink.defer(broken, size=5)
    sink.defer(lambda: [("data", "ok")], size=5)
    sink.close()
    assert added == ["ok"]
    assert sink.pending_bytes == 0


def test_items_reach_the_store_in_the_order_they_were_logged(tmp_path: Path) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append(item), workers=2)
    first_may_finish = threading.Event()

    def first() -> Items:
        first_may_finish.wait(10)
        return [("data", 0)]

    sink.defer(first)
    for number in range(1, 6):
        sink.defer(lambda number=number: [("data", number)])
    time.sleep(0.3)
    assert added == []  # done, but waiting behind the first
    first_may_finish.set()
    sink.close()
    assert added == [0, 1, 2, 3, 4, 5]


def test_media_rows_read_back_in_logging_order(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    big = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    run.log({"slow": mlop.Video(big, format="gif"), "fast": mlop.Text("quick")})
    for step in range(1, 6):
        run.log({"img": mlop.Image(np.full((4, 4), step, dtype=np.uint8))})
    run.finish()
    reader = mlop.open_run(run.dir)
    rows = [(r["key"], r["step"]) for r in reader.media()]
    reader.close()
    assert rows == [("slow", 0), ("fast", 0)] + [("img", s) for s in range(1, 6)]


def test_close_with_a_timeout_drops_what_has_not_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append(item), workers=1)
    started = threading.Event()

    def slow() -> Items:
        started.set()
        time.sleep(0.5)
        return [("data", "slow")]

    sink.defer(slow, size=10)
    started.wait(5)
    for number in range(3):
        sink.defer(lambda number=number: [("data", number)], size=10)
    began = time.monotonic()
    assert sink.close(timeout=0.1) == 3
    assert time.monotonic() - began < 5
    assert added == ["slow"]  # the running value finished; the queued ones were dropped
    assert sink.pending_bytes == 0
    assert "3 logged media values were dropped" in caplog.text


def test_close_without_a_timeout_stores_everything(tmp_path: Path) -> None:
    added: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: added.append(item), workers=1)
    for number in range(20):
        sink.defer(lambda number=number: [("data", number)], size=10)
    assert sink.close() == 0
    assert added == list(range(20))


def test_past_the_time_bound_the_backlog_stops_growing(tmp_path: Path) -> None:
    stored: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: stored.append(item), workers=1, max_drain=0.25)

    def encode(value: int) -> Any:
        def work() -> Items:
            time.sleep(0.05)  # an encoder far slower than the loop that logs
            return [("data", value)]

        return work

    sink.defer(encode(0), size=1000)
    deadline = time.monotonic() + 10
    while not stored and time.monotonic() < deadline:  # one done: the cost of this kind is known
        time.sleep(0.01)
    backlog, estimates = [], []
    for value in range(1, 25):
        sink.defer(encode(value), size=1000)
        backlog.append(sink.pending_bytes // 1000)
        estimates.append(sink.pending_seconds)
    assert sink.close() == 0
    # Every value is stored, in order, and no more than 0.25 s of work (5 values, one more running)
    # ever waited: without the bound all 24 would have.
    assert stored == list(range(25))
    assert max(backlog) <= 7
    assert 0 < max(estimates) <= 0.25 + 0.05 * 2


def test_a_slow_first_value_does_not_make_larger_ones_wait_for_an_empty_queue(tmp_path: Path) -> None:
    # The first value of a kind pays for imports: 0.3 s for 10 bytes. Larger ones take 10 ms a megabyte.
    stored: list[Any] = []
    sink = MediaSink(tmp_path, lambda kind, item: stored.append(item), workers=1, max_drain=1.0)
    gate = threading.Event()

    def encode(value: int, seconds: float, wait: threading.Event | None = None) -> Any:
        def work() -> Items:
            if wait is not None:
                wait.wait(10)
            time.sleep(seconds)
            return [("data", value)]

        return work

    for value, seconds, size in ((0, 0.3, 10), (1, 0.01, 1_000_000)):
        sink.defer(encode(value, seconds), size=size, kind="image")
        deadline = time.monotonic() + 10
        while len(stored) <= value and time.monotonic() < deadline:
            time.sleep(0.01)
    sink.defer(encode(2, 0.01, gate), size=1_000_000, kind="image")  # holds the worker
    more = threading.Thread(
        target=lambda: [sink.defer(encode(v, 0.01), size=1_000_000, kind="image") for v in (3, 4)]
    )
    more.start()
    more.join(5)
    # A megabyte is now known to cost about a quarter of a second, not 0.03 s a byte: two more fit in
    # the 1 s bound behind the one in progress instead of waiting for it.
    assert not more.is_alive()
    gate.set()
    assert sink.close() == 0
    assert stored == [0, 1, 2, 3, 4]
