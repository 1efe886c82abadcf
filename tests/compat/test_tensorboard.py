"""``mlop import tensorboard``: event files written by TensorBoard's own writers, checked against
TensorBoard's own reader (EventAccumulator) value for value."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop
from mlop.cli import main
from mlop_compat._tensorboard import find_runs, import_tensorboard
from mlop_compat._tensorboard_reader import masked_crc, read_events

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def _accumulator(folder: Path) -> EventAccumulator:
    everything = {
        "scalars": 0,
        "histograms": 0,
        "images": 0,
        "tensors": 0,
        "audio": 0,
        "compressedHistograms": 0,
    }
    acc = EventAccumulator(str(folder), size_guidance=everything)
    acc.Reload()
    return acc


def _write_torch_run(folder: Path, steps: int = 50, start: int = 0) -> None:
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(start)
    writer = SummaryWriter(str(folder))
    for step in range(start, start + steps):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        if step % 10 == 0:
            writer.add_scalar("eval/acc", 0.5 + step / 1000, step)
    writer.add_histogram("weights", rng.normal(size=500), start + 3, bins="auto")
    writer.add_histogram("weights_tf", rng.normal(size=500), start + 4)  # TensorFlow's default buckets
    writer.add_image("sample", rng.random((3, 6, 5)), start + 7)
    writer.add_text("notes", f"**step** {start}", start + 2)
    tone = np.sin(np.linspace(0, 40 * np.pi, 1600)).astype(np.float32) * 0.5
    writer.add_audio("sound", tone, start + 5, sample_rate=8000)
    writer.close()


def _edges(payload: dict[str, Any]) -> list[float]:
    bins = payload["bins"]
    if isinstance(bins, dict):
        return list(np.linspace(bins["min"], bins["max"], bins["num"] + 1))
    return list(bins)


def _run_for(base: Path, name: str, project: str = "tb") -> mlop.RunReader:
    runs = [r for r in mlop.list_runs(base) if r.name == name and r.project == project]
    assert len(runs) == 1, [r.name for r in mlop.list_runs(base)]
    return runs[0]


def _check_against_tensorboard(folder: Path, run: mlop.RunReader) -> None:
    acc = _accumulator(folder)
    tags = acc.Tags()
    for tag in tags["scalars"]:
        expected = [(e.step, int(e.wall_time * 1000), e.value) for e in acc.Scalars(tag)]
        got = [(m["step"], m["time"], m["value"]) for m in run.metrics(tag)]
        assert got == expected
        assert expected
    for tag in tags["histograms"]:
        expected_h = acc.Histograms(tag)
        got_h = list(run.data(tag))
        assert len(got_h) == len(expected_h) == 1
        value = expected_h[0].histogram_value
        payload = got_h[0]["value"]
        assert (got_h[0]["step"], got_h[0]["time"]) == (
            expected_h[0].step,
            int(expected_h[0].wall_time * 1000),
        )
        assert payload["freq"] == [int(c) for c in value.bucket]
        assert sum(payload["freq"]) == value.num
        limits = list(value.bucket_limit)
        if limits[-1] > 1e300:  # TensorFlow's last bucket ends at DBL_MAX; the importer ends it at the max
            limits = limits[:-1]
        assert _edges(payload)[1 : len(limits) + 1] == pytest.approx(limits, rel=1e-12)
    for tag in tags["images"]:
        expected_i = acc.Images(tag)
        got_i = list(run.media(tag))
        assert [(g["step"], Path(g["path"]).read_bytes()) for g in got_i] == [
            (e.step, e.encoded_image_string) for e in expected_i
        ]
    for tag in tags["audio"]:
        expected_a = acc.Audio(tag)
        got_a = list(run.media(tag))
        assert [(g["step"], g["type"], Path(g["path"]).read_bytes()) for g in got_a] == [
            (e.step, "AUDIO", e.encoded_audio_string) for e in expected_a
        ]
    for tag in tags["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "text":
            continue
        expected_t = [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
        assert [(d["step"], d["value"]) for d in run.data(tag)] == expected_t


def test_import_matches_tensorboards_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logdir = tmp_path / "logs"
    _write_torch_run(logdir / "exp1")
    _write_torch_run(logdir / "exp2" / "train", steps=30, start=100)
    assert find_runs(logdir) == [logdir / "exp1", logdir / "exp2" / "train"]

    assert (
        main(["import", "tensorboard", str(logdir), "--project", "tb", "--dir", str(tmp_path / "out")]) == 0
    )
    out = capsys.readouterr().out
    assert "imported  exp1" in out and "imported  exp2/train" in out and "2 imported" in out

    for folder, name, steps in ((logdir / "exp1", "exp1", 50), (logdir / "exp2" / "train", "exp2/train", 30)):
        run = _run_for(tmp_path / "out", name)
        assert run.project == "tb" and run.status == "COMPLETED" and "tensorboard" in run.tags
        assert len(list(run.metrics("train/loss"))) == steps
        _check_against_tensorboard(folder, run)


def test_importing_again_adds_only_new_events(tmp_path: Path) -> None:
    logdir, out = tmp_path / "logs", tmp_path / "out"
    _write_torch_run(logdir / "exp", steps=20)
    seen: list[tuple[int, int]] = []
    first = import_tensorboard(logdir, project="tb", dir=out, progress=lambda d, t, _n: seen.append((d, t)))
    assert [r.status for r in first] == ["imported"]
    total = sum(p.stat().st_size for p in (logdir / "exp").iterdir())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert first[0].counts["scalar"] == 22 and first[0].steps == (0, 19)

    again = import_tensorboard(logdir, project="tb", dir=out)
    assert [r.status for r in again] == ["unchanged"] and not again[0].counts
    assert len(list(_run_for(out, "exp").metrics("train/loss"))) == 20

    # Training resumed: a second event file in the same folder. Only its events are added.
    _write_torch_run(logdir / "exp", steps=10, start=20)
    third = import_tensorboard(logdir, project="tb", dir=out)
    assert [r.status for r in third] == ["updated"] and third[0].run_id == first[0].run_id
    run = _run_for(out, "exp")
    assert [m["step"] for m in run.metrics("train/loss")] == list(range(30))
    assert len(mlop.list_runs(out)) == 1
    # What TensorBoard reads from both files is exactly what the run holds.
    acc = _accumulator(logdir / "exp")
    assert [(m["step"], m["value"]) for m in run.metrics("eval/acc")] == [
        (e.step, e.value) for e in acc.Scalars("eval/acc")
    ]


def _tensor_event(step: int, tag: str, tensor: Any, plugin: str | None, wall_time: float) -> Any:
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin is not None:
        value.metadata.plugin_data.plugin_name = plugin
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value]))


def test_tf2_tensor_summaries(tmp_path: Path) -> None:
    """TF2 writers put scalars, histograms and text in tensors and name the plugin on the first value only."""
    from tensorboard.util import tensor_util

    folder = tmp_path / "logs" / "tf2"
    writer = EventFileWriter(str(folder))
    base = 1_700_000_000.25
    for step in range(5):
        loss = tensor_util.make_tensor_proto(np.float32(0.5 / (step + 1)))
        writer.add_event(_tensor_event(step, "loss", loss, "scalars" if step == 0 else None, base + step))
    buckets = np.array([[0.0, 1.0, 3.0], [1.0, 2.0, 5.0], [2.0, 4.0, 1.0]])
    hist = tensor_util.make_tensor_proto(buckets)
    writer.add_event(_tensor_event(2, "dist", hist, "histograms", base + 10))
    text = tensor_util.make_tensor_proto("plain *text*")
    writer.add_event(_tensor_event(3, "log", text, "text", base + 11))
    writer.close()

    results = import_tensorboard(tmp_path / "logs", project="tb", dir=tmp_path / "out")
    assert results[0].status == "imported" and not results[0].skipped
    run = _run_for(tmp_path / "out", "tf2")
    got = [(m["step"], m["time"], m["value"]) for m in run.metrics("loss")]
    assert got == [(s, int((base + s) * 1000), float(np.float32(0.5 / (s + 1)))) for s in range(5)]
    (dist,) = run.data("dist")
    assert dist["step"] == 2 and dist["value"]["freq"] == [3, 5, 1]
    assert _edges(dist["value"]) == [0.0, 1.0, 2.0, 4.0]
    assert [(d["step"], d["value"]) for d in run.data("log")] == [(3, "plain *text*")]


def test_cut_and_damaged_files(tmp_path: Path) -> None:
    """A record cut short ends the reading before it; a damaged one is reported and the rest kept."""
    logdir = tmp_path / "logs"
    _write_torch_run(logdir / "exp", steps=10)
    (event_file,) = (logdir / "exp").iterdir()
    whole = event_file.read_bytes()
    records = [end for _event, end in read_events(event_file)]
    event_file.write_bytes(whole[: records[-1] - 5])  # the last record loses its end

    first = import_tensorboard(logdir, project="tb", dir=tmp_path / "out")
    assert first[0].status == "imported" and not first[0].skipped
    assert len(list(_run_for(tmp_path / "out", "exp").metrics(system=False))) == 11

    # The writer finishes the record later: the next import picks it up (the audio event).
    event_file.write_bytes(whole)
    second = import_tensorboard(logdir, project="tb", dir=tmp_path / "out")
    assert second[0].status == "updated" and second[0].counts == {"audio": 1}

    damaged = tmp_path / "damaged" / "exp"
    damaged.mkdir(parents=True)
    data = bytearray(whole)
    start = records[3]
    length = struct.unpack("<Q", data[start : start + 8])[0]
    assert struct.unpack("<I", data[start + 8 : start + 12])[0] == masked_crc(bytes(data[start : start + 8]))
    data[start + 12 + length // 2] ^= 0xFF  # flip a byte inside the fifth record
    (damaged / event_file.name).write_bytes(bytes(data))
    result = import_tensorboard(tmp_path / "damaged", project="dmg", dir=tmp_path / "out")[0]
    assert result.status == "imported"
    assert any("bad data checksum" in reason for reason in result.skipped)
    # Records 1-4 are loss@0, acc@0, loss@1, loss@2: the damage in loss@2 ends the file there.
    assert [m["step"] for m in _run_for(tmp_path / "out", "exp", "dmg").metrics("train/loss")] == [0, 1]


def test_a_run_without_import_record_is_not_imported_twice(tmp_path: Path) -> None:
    _write_torch_run(tmp_path / "logs" / "exp", steps=5)
    (first,) = import_tensorboard(tmp_path / "logs", project="tb", dir=tmp_path / "out")
    (first.run_dir / "tensorboard-import.json").unlink()
    (again,) = import_tensorboard(tmp_path / "logs", project="tb", dir=tmp_path / "out")
    assert again.status == "skipped" and "tensorboard-import.json" in (again.error or "")
    assert len(list(_run_for(tmp_path / "out", "exp").metrics("train/loss"))) == 5


def test_no_event_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["import", "tensorboard", str(tmp_path / "empty")]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().out
    assert main(["import", "tensorboard", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["import", "tensorboard", str(tmp_path / "empty"), "--project", "a/b"]) == 1
    assert "project 'a/b'" in capsys.readouterr().err


def test_hparams_become_config_and_the_rest_is_reported(tmp_path: Path) -> None:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "logs" / "run"))
    writer.add_hparams({"lr": 0.1, "batch": 32, "opt": "adam", "nesterov": True}, {"hparam/acc": 0.9})
    with warnings.catch_warnings():  # add_graph traces with torch.jit.trace, which torch now deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        writer.add_graph(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    writer.close()

    results = {r.name: r for r in import_tensorboard(tmp_path / "logs", project="tb", dir=tmp_path / "out")}
    assert results["run"].skipped["graph"] == 1
    (hparams_run,) = [r for name, r in results.items() if name != "run"]  # add_hparams writes a sub-run
    assert hparams_run.counts == {"hparams": 1, "scalar": 1}
    run = _run_for(tmp_path / "out", hparams_run.name)
    config = run.config
    assert {k: config[k] for k in ("lr", "batch", "opt", "nesterov")} == {
        "lr": 0.1,
        "batch": 32,
        "opt": "adam",
        "nesterov": True,
    }
    assert [m["value"] for m in run.metrics("hparam/acc")] == pytest.approx([0.9])
