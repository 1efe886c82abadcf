"""mlop.Video: frames become a playable GIF (or MP4 with the optional encoder) with every frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

import mlop
from mlop._data._video import mp4_available


def _log(tmp_path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log(data)
    run.finish()
    reader = mlop.open_run(run.dir)
    try:
        return list(reader.media())
    finally:
        reader.close()


def _frames(t: int = 6, h: int = 16, w: int = 24) -> np.ndarray[Any, Any]:
    """Frames of flat, distinct colours (a GIF keeps them exactly)."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]])
    return np.stack([np.broadcast_to(colours[i % 6], (h, w, 3)) for i in range(t)]).astype(np.uint8)


def _gif_frames(path: str) -> list[np.ndarray[Any, Any]]:
    out = []
    with PILImage.open(path) as gif:
        assert gif.format == "GIF"
        for index in range(gif.n_frames):
            gif.seek(index)
            out.append(np.asarray(gif.convert("RGB")))
    return out


def test_gif_keeps_every_frame_and_its_pixels(tmp_path: Path) -> None:
    frames = _frames()
    [row] = _log(tmp_path, {"episode": mlop.Video(frames, fps=10, format="gif", caption="ep 1")})
    assert row["type"] == "VIDEO" and row["fileType"] == "gif" and row["caption"] == "ep 1"
    assert row["frames"] == 6 and row["fps"] == 10
    read = _gif_frames(row["path"])
    assert len(read) == 6
    for got, want in zip(read, frames, strict=True):
        np.testing.assert_array_equal(got, want)
    with PILImage.open(row["path"]) as gif:
        assert gif.info["duration"] == 100


def test_channels_first_and_float_frames(tmp_path: Path) -> None:
    frames = _frames(4)
    [row] = _log(tmp_path, {"v": mlop.Video(frames.transpose(0, 3, 1, 2) / 255.0, format="gif")})
    read = _gif_frames(row["path"])
    assert len(read) == 4
    np.testing.assert_array_equal(read[3], frames[3])


def test_a_batch_is_tiled_into_a_grid(tmp_path: Path) -> None:
    batch = np.stack([_frames(3, 8, 10)] * 3)  # (B=3, T, H, W, C): a 2×2 grid, one cell empty
    [row] = _log(tmp_path, {"v": mlop.Video(batch, format="gif")})
    read = _gif_frames(row["path"])
    assert len(read) == 3
    assert read[0].shape == (16, 20, 3)
    np.testing.assert_array_equal(read[1][:8, :10], batch[0, 1])
    assert (read[1][8:, 10:] == 0).all()


@pytest.mark.skipif(not mp4_available(), reason="imageio-ffmpeg (mlop-core[media]) is not installed")
def test_mp4_by_default_when_the_encoder_is_installed(tmp_path: Path) -> None:
    import imageio_ffmpeg

    frames = np.random.default_rng(0).integers(0, 256, (9, 3, 17, 31), dtype=np.uint8)  # odd sides
    [row] = _log(tmp_path, {"v": mlop.Video(frames, rate=12)})
    assert row["fileType"] == "mp4" and Path(row["path"]).read_bytes()[4:8] == b"ftyp"
    count, seconds = imageio_ffmpeg.count_frames_and_secs(row["path"])
    assert count == 9
    assert seconds == pytest.approx(9 / 12, abs=0.1)


def test_a_video_file_is_kept_as_it_is(tmp_path: Path) -> None:
    source = tmp_path / "run.webm"
    source.write_bytes(b"\x1aE\xdf\xa3 fake webm")
    [row] = _log(tmp_path, {"v": mlop.Video(source)})
    assert Path(row["path"]).read_bytes() == source.read_bytes()
    assert row["fileType"] == "webm"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"data": np.zeros((4, 8, 8))}, ValueError, "shape"),
        ({"data": np.zeros((2, 5, 8, 8))}, ValueError, "channel axis"),
        ({"data": np.zeros((0, 8, 8, 3))}, ValueError, "shape"),
        ({"data": np.zeros((2, 8, 8, 3)), "format": "avi"}, ValueError, "format"),
        ({"data": np.zeros((2, 8, 8, 3)), "fps": -1}, ValueError, "positive"),
        ({"data": np.zeros((2, 8, 8, 3)), "rate": 5, "fps": 6}, ValueError, "disagree"),
        ({"data": "missing.mp4"}, FileNotFoundError, "no such file"),
    ],
)
def test_bad_input_fails_when_the_value_is_made(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        mlop.Video(**kwargs)


def test_mp4_without_its_encoder_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(ImportError, match=r"mlop-core\[media\]"):
        mlop.Video(np.zeros((2, 8, 8, 3), dtype=np.uint8), format="mp4")
