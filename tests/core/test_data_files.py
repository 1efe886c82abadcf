"""mlop.Text, mlop.Artifact and mlop.File: documents, files and directory trees kept with the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlop


def _log(tmp_path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log(data)
    run.finish()
    reader = mlop.open_run(run.dir)
    try:
        return list(reader.media())
    finally:
        reader.close()


def test_text_literal_and_file(tmp_path: Path) -> None:
    doc = tmp_path / "report.md"
    doc.write_text("# Results\n\nall green ✓\n", encoding="utf-8")
    rows = _log(
        tmp_path,
        {
            "sample": mlop.Text("once upon a time\nthe end ✓", caption="generated"),
            "report": mlop.Text(doc),
            "by_name": mlop.Text(str(doc)),
        },
    )
    by_key = {r["key"]: r for r in rows}
    sample = by_key["sample"]
    assert sample["type"] == "TEXT" and sample["fileType"] == "txt" and sample["caption"] == "generated"
    assert Path(sample["path"]).read_text(encoding="utf-8") == "once upon a time\nthe end ✓"
    assert by_key["report"]["fileType"] == "md"
    assert Path(by_key["report"]["path"]).read_bytes() == doc.read_bytes()
    assert by_key["by_name"]["path"] == by_key["report"]["path"]


def test_a_string_that_names_no_file_is_text(tmp_path: Path) -> None:
    [row] = _log(tmp_path, {"t": mlop.Text("notes.txt")})
    assert Path(row["path"]).read_text() == "notes.txt"


def test_artifact_file_keeps_bytes_and_metadata(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(bytes(range(256)) * 10)
    metadata = {"epoch": 3, "metrics": {"acc": 0.91}, "tags": ["best"]}
    [row] = _log(tmp_path, {"ckpt": mlop.Artifact(checkpoint, caption="best", metadata=metadata)})
    assert row["type"] == "ARTIFACT" and row["fileType"] == "ckpt" and row["caption"] == "best"
    assert Path(row["path"]).read_bytes() == checkpoint.read_bytes()
    assert row["fileSize"] == 2560 and row["metadata"] == metadata
    assert row["artifactPath"] == "model.ckpt"


def test_artifact_directory_keeps_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "weights" / "shards").mkdir(parents=True)
    files = {
        "config.json": b'{"layers": 2}',
        "weights/shards/part-0.bin": b"\x00\x01" * 100,
        "weights/shards/part-1.bin": b"\x02\x03" * 100,
        "README": b"no extension",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    rows = _log(tmp_path, {"export": mlop.Artifact(root, metadata={"format": "safetensors"})})
    assert {r["artifactPath"]: Path(r["path"]).read_bytes() for r in rows} == files
    assert {r["artifactName"] for r in rows} == {"export"}
    assert all(r["metadata"] == {"format": "safetensors"} for r in rows)
    assert len({r["fileName"] for r in rows}) == 4


def test_file_is_registered_as_the_file_type(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text("a,b\n1,2\n")
    [row] = _log(tmp_path, {"csv": mlop.File(source)})
    assert row["type"] == "FILE" and row["fileType"] == "csv"
    assert Path(row["path"]).read_text() == "a,b\n1,2\n"


def test_the_same_file_logged_at_two_steps_is_stored_once(tmp_path: Path) -> None:
    source = tmp_path / "vocab.txt"
    source.write_text("a\nb\n")
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log({"vocab": mlop.Artifact(source)})
    run.log({"vocab": mlop.Artifact(source)})
    run.finish()
    reader = mlop.open_run(run.dir)
    rows = list(reader.media("vocab"))
    reader.close()
    assert sorted(r["step"] for r in rows) == [0, 1]
    assert len([p for p in (run.dir / "media").rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: mlop.Artifact(p / "missing"), FileNotFoundError, "no such file"),
        (lambda p: mlop.Artifact((p / "empty").mkdir() or p / "empty"), FileNotFoundError, "holds no file"),
        (lambda p: mlop.Artifact(p, metadata={"x": object()}), TypeError, "JSON-safe"),
        (lambda p: mlop.Artifact(p, metadata={"x": float("nan")}), TypeError, "JSON-safe"),
        (lambda p: mlop.Artifact(p, metadata=[1]), TypeError, "dict"),
        (lambda p: mlop.Artifact(b"bytes"), TypeError, "path"),
        (lambda p: mlop.Text(p / "missing.txt"), FileNotFoundError, "no such file"),
        (mlop.Text, IsADirectoryError, "directory"),
        (lambda p: mlop.Text(42), TypeError, "int"),
    ],
)
def test_bad_input_fails_when_the_value_is_made(
    tmp_path: Path, make: Any, error: type[Exception], message: str
) -> None:
    (tmp_path / "some.txt").write_text("x")
    with pytest.raises(error, match=message):
        make(tmp_path)
