"""A run from init() to finish(), read back from its store."""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop


def _metrics(run: Any, key: str | None = None) -> list[tuple[str, int, Any]]:
    reader = mlop.open_run(run.dir)
    try:
        return [(row["key"], row["step"], row["value"]) for row in reader.metrics(key)]
    finally:
        reader.close()


def test_offline_is_the_default_and_the_run_lives_under_dir(tmp_path: Path) -> None:
    run = mlop.init(project="proj", name="first", dir=tmp_path, config={"lr": 0.1}, tags=["a"])
    assert run.settings.run_mode == "offline"
    assert run.dir == tmp_path / ".mlop" / "proj" / run.id
    assert mlop.ops[-1] is run
    run.log({"loss": 1.5})
    run.finish()
    assert run.status == "COMPLETED"
    assert run not in mlop.ops
    reader = mlop.open_run(run.dir)
    assert (reader.name, reader.project, reader.status) == ("first", "proj", "COMPLETED")
    assert reader.config == {"lr": 0.1}
    assert reader.tags == ["a"]
    rows = list(reader.metrics())
    assert len(rows) == 1
    assert rows[0]["key"] == "loss" and rows[0]["step"] == 0 and rows[0]["value"] == 1.5
    assert isinstance(rows[0]["time"], int) and rows[0]["time"] > 1_600_000_000_000


def test_every_value_kind_round_trips_exactly(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path)
    run.log(
        {
            "int": 7,
            "float": 0.1 + 0.2,
            "big": 2**53 + 1,
            "bool_t": True,
            "bool_f": False,
            "np_f32": np.float32(0.5),
            "np_i64": np.int64(-3),
            "np_bool": np.bool_(True),
            "np_0d": np.array(2.25),
            "nan": float("nan"),
            "inf": math.inf,
            "ninf": -math.inf,
            "nested": {"a": 1, "b": {"c": 2.5}},
            "text": "hello world",
        }
    )
    run.finish()
    got = {key: value for key, _step, value in _metrics(run)}
    nan = got.pop("nan")
    assert got == {
        "int": 7,
        "float": 0.1 + 0.2,
        "big": 2**53 + 1,
        "bool_t": 1,
        "bool_f": 0,
        "np_f32": 0.5,
        "np_i64": -3,
        "np_bool": 1,
        "np_0d": 2.25,
        "inf": math.inf,
        "ninf": -math.inf,
        "nested/a": 1,
        "nested/b/c": 2.5,
    }
    assert math.isnan(nan) and type(nan) is float  # NaN comes back as the float it was logged as
    assert type(got["bool_t"]) is int
    data = list(mlop.open_run(run.dir).data("text"))
    assert [(d["type"], d["value"], d["step"]) for d in data] == [("string-series", "hello world", 0)]


def test_bad_values_are_skipped_with_one_warning_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = mlop.init(dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="mlop"):
        for step in range(3):
            run.log({"good": step, "numbers": [1, 2, 3], "obj": object(), "none": None})
    run.finish()
    assert _metrics(run) == [("good", 0, 0), ("good", 1, 1), ("good", 2, 2)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "'numbers'" in w]) == 1
    assert any("mlop.Histogram" in w for w in warnings if "'numbers'" in w)
    assert len([w for w in warnings if "'obj'" in w]) == 1
    assert len([w for w in warnings if "'none'" in w]) == 1


def test_log_never_raises_on_garbage(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path)
    run.log("not a dict")  # type: ignore[arg-type]
    run.log({"x": 1}, step="seven")  # type: ignore[arg-type]
    run.log({"x": 2}, step=-4)
    run.log({1: 3})  # type: ignore[dict-item]
    run.finish()
    run.log({"after": 1})
    rows = _metrics(run)
    assert [(k, v) for k, _s, v in rows] == [("x", 1), ("x", 2), ("1", 3)]


def test_steps_auto_increment_explicit_and_lower(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = mlop.init(dir=tmp_path)
    run.log({"a": 0})
    run.log({"a": 1})
    run.log({"a": 10}, step=10)
    run.log({"a": 11})
    with caplog.at_level(logging.WARNING, logger="mlop"):
        run.log({"a": 5}, step=5)
        run.log({"a": 4}, step=4)
    run.log({"a": 6})  # an explicit step sets the counter: this one lands at step 5
    run.finish()
    assert [(s, v) for _k, s, v in _metrics(run)] == [
        (0, 0),
        (1, 1),
        (10, 10),
        (11, 11),
        (5, 5),
        (4, 4),
        (5, 6),
    ]
    lower = [r for r in caplog.records if "lower than the last step" in r.getMessage()]
    assert len(lower) == 1


def test_commit_false_merges_into_the_next_commit(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path)
    run.log({"a": 1}, commit=False)
    run.log({"b": 2}, commit=False)
    run.log({"c": 3})
    run.log({"d": 4}, commit=False)
    run.finish()  # a pending commit is written at finish
    assert _metrics(run) == [("a", 0, 1), ("b", 0, 2), ("c", 0, 3), ("d", 1, 4)]


def test_explicit_timestamp_is_kept(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path)
    run.log({"a": 1}, timestamp=1_700_000_000.25)
    run.finish()
    (row,) = mlop.open_run(run.dir).metrics()
    assert row["time"] == 1_700_000_000_250


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Optim:
    name: str
    betas: tuple[float, float]


def test_config_converts_what_json_cannot_hold(tmp_path: Path) -> None:
    config = {
        "lr": np.float64(0.001),
        "epochs": np.int32(3),
        "path": Path("/data/train"),
        "optim": Optim("adam", (0.9, 0.999)),
        "color": Color.RED,
        "labels": {"b", "a"},
        "thing": object(),
    }
    run = mlop.init(dir=tmp_path, config=config)
    run.update_config({"optim": {"eps": 1e-8}, "extra": [1, 2]})
    run.finish()
    stored = mlop.open_run(run.dir).config
    assert stored["lr"] == 0.001 and stored["epochs"] == 3
    assert stored["path"] == "/data/train"
    assert stored["optim"] == {"name": "adam", "betas": [0.9, 0.999], "eps": 1e-8}
    assert stored["color"] == "red"
    assert stored["labels"] == ["a", "b"]
    assert stored["thing"].startswith("<object object")
    assert stored["extra"] == [1, 2]
    assert run.config == stored


def test_tags_add_and_remove_without_duplicates(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, tags="base")
    run.add_tags(["x", "y", "x"])
    run.add_tags("base")
    run.remove_tags(["y", "absent"])
    assert run.tags == ["base", "x"]
    run.finish()
    assert mlop.open_run(run.dir).tags == ["base", "x"]


def test_finish_twice_and_context_manager(tmp_path: Path) -> None:
    with mlop.init(dir=tmp_path) as run:
        run.log({"a": 1})
    assert run.status == "COMPLETED"
    run.finish()
    run.finish()
    assert mlop.open_run(run.dir).status == "COMPLETED"


def test_context_manager_marks_failed_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), mlop.init(dir=tmp_path) as run:
        raise RuntimeError("boom")
    reader = mlop.open_run(run.dir)
    assert reader.status == "FAILED"
    assert reader.status_metadata is not None
    assert reader.status_metadata["type"] == "RuntimeError"
    assert reader.status_metadata["message"] == "boom"
    assert "RuntimeError: boom" in reader.status_metadata["trace"]


def test_finish_with_an_exit_code_fails_the_run(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path)
    run.finish(code=3)
    assert mlop.open_run(run.dir).status == "FAILED"


def test_module_level_functions_act_on_the_newest_run(tmp_path: Path) -> None:
    with pytest.raises(mlop.NoRunError, match=r"mlop\.init\(\)"):
        mlop.log({"a": 1})
    with pytest.raises(mlop.MlopError):
        mlop.finish()
    first = mlop.init(dir=tmp_path, name="one")
    second = mlop.init(dir=tmp_path, name="two")
    assert mlop.ops == [first, second]
    mlop.log({"a": 1})
    mlop.finish()
    assert second.status == "COMPLETED" and first.status == "RUNNING"
    assert mlop.ops == [first]
    first.finish()
    assert _metrics(second) == [("a", 0, 1)]
    assert _metrics(first) == []


def test_a_run_id_that_exists_needs_resume(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, run_id="fixed-1", config={"a": 1}, tags=["t"])
    run.log({"x": 1})
    run.log({"x": 2})
    run.finish()
    with pytest.raises(mlop.RunExistsError, match="resume"):
        mlop.init(dir=tmp_path, run_id="fixed-1")
    again = mlop.init(dir=tmp_path, run_id="fixed-1", resume=True, config={"b": 2})
    again.log({"x": 3})
    again.finish()
    reader = mlop.open_run(again.dir)
    assert [(r["step"], r["value"]) for r in reader.metrics("x")] == [(0, 1), (1, 2), (2, 3)]
    assert reader.config == {"a": 1, "b": 2}
    assert reader.tags == ["t"]


def test_bad_init_arguments_raise_at_once(tmp_path: Path) -> None:
    with pytest.raises(mlop.ConfigError, match="project"):
        mlop.init(dir=tmp_path, project="../escape")
    with pytest.raises(mlop.ConfigError, match="config"):
        mlop.init(dir=tmp_path, config=42)
    with pytest.raises(mlop.ConfigError, match="mode"):
        mlop.init(dir=tmp_path, mode="sometimes")


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    for mode in ("disabled", "noop"):
        run = mlop.init(dir=tmp_path, mode=mode, config={"a": 1})
        run.log({"a": 1})
        run.add_tags("x")
        mlop.log({"b": 2})
        run.finish()
        assert run.config == {"a": 1}
    assert not (tmp_path / ".mlop").exists()


def test_save_dir_is_an_alias_of_dir(tmp_path: Path) -> None:
    run = mlop.init(save_dir=tmp_path / "elsewhere")
    run.finish()
    assert str(run.dir).startswith(str(tmp_path / "elsewhere"))


def test_rng_state_is_untouched(tmp_path: Path) -> None:
    import random

    random.seed(1234)
    np.random.seed(1234)
    expected = (random.random(), np.random.rand())
    random.seed(1234)
    np.random.seed(1234)
    run = mlop.init(dir=tmp_path)
    run.log({"a": 1})
    run.finish()
    assert (random.random(), np.random.rand()) == expected


def test_list_runs_and_reading_a_live_run(tmp_path: Path) -> None:
    done = mlop.init(dir=tmp_path, project="p", name="done")
    done.log({"a": 1})
    done.finish()
    live = mlop.init(dir=tmp_path, project="p", name="live", x_flush_interval=0.01)
    for i in range(5):
        live.log({"a": i})
    live._writer.flush()
    runs = {r.name: r for r in mlop.list_runs(tmp_path)}
    assert set(runs) == {"done", "live"}
    assert runs["done"].status == "COMPLETED"
    assert runs["live"].status == "RUNNING"
    assert runs["live"].progress()["steps"] == 5
    live.finish()
    runs["live"].refresh()
    assert runs["live"].status == "COMPLETED"


def test_open_run_of_a_missing_dir_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(mlop.StoreError):
        mlop.open_run(tmp_path / "nothing")


def test_an_item_that_cannot_be_stored_costs_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    run = mlop.init(dir=tmp_path, disable_system_metrics=True, disable_console=True)
    run.log({"before": 1})
    # A data item whose payload holds an object pickle refuses (a lock), written in the same flush.
    run._writer.add("data", (0, 0.0, "odd", "DATA", {"lock": threading.Lock()}))
    run.log({"after": 2})
    with caplog.at_level(logging.WARNING):
        run.finish()
    reader = mlop.open_run(run.dir)
    assert [(r["key"], r["value"]) for r in reader.metrics()] == [("before", 1), ("after", 2)]
    assert list(reader.data("odd")) == []
    assert reader.status == "COMPLETED"
    assert any("cannot be stored" in r.getMessage() for r in caplog.records)
