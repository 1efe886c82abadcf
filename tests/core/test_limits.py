"""What a server refuses is checked before it is stored: names, keys, numbers, steps, config values, and
damaged records in a run's store. Offline runs and real SQLite files; the online side is in tests/e2e."""

from __future__ import annotations

import importlib
import logging
import math
import pickle
import pkgutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import mlop


def _metrics(run_dir: Path) -> list[tuple[str, int, Any]]:
    with mlop.open_run(run_dir) as reader:
        return [(m["key"], m["step"], m["value"]) for m in reader.metrics()]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_refused_value_is_dropped_alone_with_one_warning_per_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = mlop.init(project="limits", dir=tmp_path, mode="offline")
    long_key = "k" * 513
    for _ in range(3):
        run.log(
            {
                "": 1.0,
                long_key: 2.0,
                "big": 10**400,
                "lone\ud800": 3.0,
                "text": "bad \udc00 text",
                "good": 4.0,
                "nested": {"": 5.0, "ok": 6},
                "edge": 10**300,
            }
        )
    run.log({"good": 7.0}, step=2**63)  # beyond int64: warned, stored at the next step
    run.log({"good": 8.0}, timestamp=math.nan)  # no time a server takes: now instead
    run.finish()

    got = _metrics(run.dir)
    assert [(k, s, v) for k, s, v in got if k == "good"] == [
        ("good", 0, 4.0),
        ("good", 1, 4.0),
        ("good", 2, 4.0),
        ("good", 3, 7.0),
        ("good", 4, 8.0),
    ]
    assert {k for k, _s, _v in got} == {"good", "nested/", "nested/ok", "edge"}
    assert [v for k, _s, v in got if k == "edge"] == [10**300] * 3
    with mlop.open_run(run.dir) as reader:
        assert list(reader.data()) == []
    warned = _warnings(caplog)
    for needle in ("''", "longer than 512", "'big'", "'lone", "'text'", "2**63", "nan"):
        assert sum(needle in w for w in warned) == 1, (needle, warned)


def test_config_that_json_cannot_hold_becomes_text_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cycle: dict[str, Any] = {"name": "c"}
    cycle["self"] = cycle
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(1000):
        node["d"] = {}
        node = node["d"]
    run = mlop.init(
        project="limits", dir=tmp_path, mode="offline", config={"big": 10**400, "cycle": cycle, "deep": deep}
    )
    run.update_config({"later": [cycle]})
    run.finish()
    with mlop.open_run(run.dir) as reader:
        config = reader.config
    assert config["big"] == str(10**400)
    assert config["cycle"] == {"name": "c", "self": "<cycle: dict>"}
    assert config["later"] == [{"name": "c", "self": "<cycle: dict>"}]
    depth, node = 0, config["deep"]
    while isinstance(node, dict):
        node, depth = node["d"], depth + 1
    assert isinstance(node, str) and depth < 40
    warned = " | ".join(_warnings(caplog))
    assert "beyond the range of a float" in warned and "cycle" in warned and "deeper than" in warned


@pytest.mark.parametrize("project", ["проект-1", "训练.δ_2", "a b-c"])
def test_project_names_take_letters_and_digits_of_any_script(tmp_path: Path, project: str) -> None:
    run = mlop.init(
        project=project, name="训练-δ-🚀\nline two", tags=["标签", "ü"], dir=tmp_path, mode="offline"
    )
    run.finish()
    (found,) = mlop.list_runs(tmp_path)
    assert (found.project, found.name, found.tags) == (project, "训练-δ-🚀\nline two", ["标签", "ü"])
    found.close()


@pytest.mark.parametrize("project", ["a/b", "..", "-x", "a\nb", "", "x" * 129, "a\\b"])
def test_a_project_name_a_folder_cannot_hold_is_refused_clearly(tmp_path: Path, project: str) -> None:
    with pytest.raises(mlop.ConfigError, match="letters, digits"):
        mlop.init(project=project, dir=tmp_path, mode="offline")
    assert not (tmp_path / ".mlop").exists() or not any((tmp_path / ".mlop").iterdir())


def test_a_run_name_that_is_not_unicode_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(mlop.ConfigError, match="surrogate"):
        mlop.init(project="p", name="bad\ud800", dir=tmp_path, mode="offline")
    with pytest.raises(mlop.ConfigError, match="tag"):
        mlop.init(project="p", tags=["ok", ""], dir=tmp_path, mode="offline")
    with pytest.raises(mlop.ConfigError, match="longer than 512"):
        mlop.init(project="p", tags=["t" * 513], dir=tmp_path, mode="offline")
    run = mlop.init(project="p", tags=["ok"], dir=tmp_path, mode="offline")
    run.add_tags(["", "x" * 513, "bad\udc00", "fine"])  # after init: warned, the good one kept
    run.finish()
    assert run.tags == ["ok", "fine"]


def test_nan_and_infinities_come_back_as_floats(tmp_path: Path) -> None:
    run = mlop.init(project="nan", dir=tmp_path, mode="offline")
    run.log({"nan": math.nan, "inf": math.inf, "ninf": -math.inf})
    run.finish()
    got = {k: v for k, _s, v in _metrics(run.dir)}
    assert type(got["nan"]) is float and math.isnan(got["nan"])
    assert got["inf"] == math.inf and got["ninf"] == -math.inf


def _crafted_run(tmp_path: Path) -> Path:
    """A run written by mlop, then damaged with sqlite3 as a disk fault or an attacker would."""
    run = mlop.init(project="corrupt", dir=tmp_path, mode="offline")
    run.log({"a": 1.0}, step=0)
    run._writer.flush()
    run.log({"a": 2.0}, step=1)
    run._writer.flush()
    run.log({"a": 3.0}, step=2)
    run.finish()
    db = sqlite3.connect(run.dir / "run.db")
    seqs = [s for (s,) in db.execute("SELECT seq FROM records WHERE kind = 'metrics' ORDER BY seq")]
    assert len(seqs) == 3
    db.execute("UPDATE records SET payload = ? WHERE seq = ?", (b"\x80\x05garbage", seqs[1]))
    evil = b"cos\nsystem\n(S'true'\ntR."  # a pickle that names code to run: refused, never run
    db.execute(
        "INSERT INTO records (kind, count, time, payload) VALUES ('metrics', 1, 0, ?)",
        (pickle.dumps([("not", "a metrics item")]),),
    )
    db.execute("INSERT INTO records (kind, count, time, payload) VALUES ('metrics', 1, 0, ?)", (evil,))
    db.execute("INSERT INTO meta (key, value) VALUES ('broken', '{not json')")
    db.commit()
    db.close()
    return run.dir


def test_a_corrupt_record_is_reported_once_and_the_rest_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = _crafted_run(tmp_path)
    for _ in range(2):
        assert _metrics(run_dir) == [("a", 0, 1.0), ("a", 2, 3.0)]
        with mlop.open_run(run_dir) as reader:
            assert reader.status == "COMPLETED"
    reports = [w for w in _warnings(caplog) if "cannot be read" in w]
    assert len(reports) == 4, reports  # three records, one meta value: each said once
    assert all("corrupt" in w for w in reports)
    assert any("record" in w and "not a metrics item" in w for w in reports)


def test_a_file_that_is_no_store_raises_mlops_own_error(tmp_path: Path) -> None:
    run_dir = tmp_path / ".mlop" / "p" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "run.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(mlop.StoreError):
        mlop.open_run(run_dir)
    with pytest.raises(mlop.StoreError):
        mlop.open_run(tmp_path / "missing")


def test_every_exception_mlop_defines_derives_from_mlop_error() -> None:
    found = []
    for info in pkgutil.walk_packages(mlop.__path__, "mlop."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    assert len(found) >= 10
    assert [cls for cls in found if not issubclass(cls, mlop.MlopError)] == []
