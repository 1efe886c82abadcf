"""mlop.Image: each accepted input is stored as a file that decodes to the same picture."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

import mlop
from mlop._loggable import Items, Loggable, MediaSink


def _log(tmp_path: Path, data: dict[str, Any], **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log(data, **kwargs)
    run.finish()
    reader = mlop.open_run(run.dir)
    try:
        return run, list(reader.media())
    finally:
        reader.close()


def _pixels(path: str) -> np.ndarray[Any, Any]:
    with PILImage.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def _rgb(h: int = 12, w: int = 20) -> np.ndarray[Any, Any]:
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_uint8_rgb_array_round_trips_pixel_for_pixel(tmp_path: Path) -> None:
    array = _rgb()
    run, rows = _log(tmp_path, {"samples/img": mlop.Image(array, caption="a cat"), "loss": 0.5}, step=3)
    [row] = rows
    assert row["key"] == "samples/img" and row["step"] == 3 and row["type"] == "IMAGE"
    assert row["caption"] == "a cat" and row["sample_index"] is None
    assert isinstance(row["time"], int)
    np.testing.assert_array_equal(_pixels(row["path"]), array)
    # protocol fields for /files: name unique (random id), extension without the dot, size of the bytes
    assert row["fileType"] == "png"
    assert row["fileName"].startswith("a-cat.") and row["fileName"].endswith(".png")
    assert row["fileSize"] == Path(row["path"]).stat().st_size
    assert Path(row["path"]).is_relative_to(run.dir / "media")
    assert Path(row["path"]).stem == row["sha256"]


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.arange(12, dtype=np.uint8).reshape(3, 4), np.arange(12, dtype=np.uint8).reshape(3, 4)),
        (np.arange(12, dtype=np.uint8).reshape(3, 4, 1), np.arange(12, dtype=np.uint8).reshape(3, 4)),
        (np.full((2, 3, 4), 200, dtype=np.uint8), np.full((2, 3, 4), 200, dtype=np.uint8)),
        (np.zeros((3, 5, 6), dtype=np.uint8), np.zeros((5, 6, 3), dtype=np.uint8)),  # CHW
        (np.array([[0.0, 0.5], [1.0, 0.25]]), np.array([[0, 128], [255, 64]], dtype=np.uint8)),
        (np.array([[-1.0, 0.0], [1.0, 3.0]]), np.array([[0, 64], [128, 255]], dtype=np.uint8)),
        (np.array([[0, 1000], [500, 250]], dtype=np.int32), np.array([[0, 255], [128, 64]], dtype=np.uint8)),
        (np.array([[3, 250]], dtype=np.int64), np.array([[3, 250]], dtype=np.uint8)),
        (np.array([[True, False]]), np.array([[255, 0]], dtype=np.uint8)),
        (np.ones((1, 4, 4, 3), dtype=np.uint8), np.ones((4, 4, 3), dtype=np.uint8)),  # a batch of one
        (np.array([[np.nan, 1.0]]), np.array([[0, 255]], dtype=np.uint8)),
    ],
)
def test_array_layouts_and_value_ranges(tmp_path: Path, array: np.ndarray[Any, Any], expected: Any) -> None:
    _run, [row] = _log(tmp_path, {"img": mlop.Image(array)})
    np.testing.assert_array_equal(_pixels(row["path"]), expected)


def test_chw_rgb_is_transposed(tmp_path: Path) -> None:
    hwc = _rgb(6, 7)
    _run, [row] = _log(tmp_path, {"img": mlop.Image(hwc.transpose(2, 0, 1))})
    np.testing.assert_array_equal(_pixels(row["path"]), hwc)


def test_the_array_is_copied_when_the_value_is_made(tmp_path: Path) -> None:
    array = _rgb()
    original = array.copy()
    image = mlop.Image(array)
    array[:] = 0  # the training loop reuses its buffer
    _run, [row] = _log(tmp_path, {"img": image})
    np.testing.assert_array_equal(_pixels(row["path"]), original)


def test_pil_image_round_trips(tmp_path: Path) -> None:
    array = _rgb()
    rgba = np.dstack([array, np.full(array.shape[:2], 77, dtype=np.uint8)])
    _run, rows = _log(
        tmp_path,
        {
            "rgb": mlop.Image(PILImage.fromarray(array)),
            "rgba": mlop.Image(PILImage.fromarray(rgba)),
            "cmyk": mlop.Image(PILImage.fromarray(array).convert("CMYK")),
        },
    )
    by_key = {r["key"]: r for r in rows}
    np.testing.assert_array_equal(_pixels(by_key["rgb"]["path"]), array)
    np.testing.assert_array_equal(_pixels(by_key["rgba"]["path"]), rgba)
    assert _pixels(by_key["cmyk"]["path"]).shape == (12, 20, 3)


def test_path_and_bytes_keep_the_file_as_it_is(tmp_path: Path) -> None:
    array = _rgb()
    jpeg = tmp_path / "photo.jpeg"
    PILImage.fromarray(array).save(jpeg, format="JPEG")
    png = io.BytesIO()
    PILImage.fromarray(array).save(png, format="PNG")
    _run, rows = _log(tmp_path, {"jpg": mlop.Image(str(jpeg)), "png": mlop.Image(png.getvalue())})
    by_key = {r["key"]: r for r in rows}
    assert Path(by_key["jpg"]["path"]).read_bytes() == jpeg.read_bytes()
    assert by_key["jpg"]["fileType"] == "jpg"
    assert Path(by_key["png"]["path"]).read_bytes() == png.getvalue()
    np.testing.assert_array_equal(_pixels(by_key["png"]["path"]), array)


def test_a_file_overwritten_after_logging_is_stored_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    PILImage.fromarray(_rgb()).save(path)
    before = path.read_bytes()
    image = mlop.Image(path)
    PILImage.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(path)
    _run, [row] = _log(tmp_path, {"plot": image})
    assert Path(row["path"]).read_bytes() == before


def test_matplotlib_figure_is_rendered(tmp_path: Path) -> None:
    figure_module = pytest.importorskip("matplotlib.figure")
    figure = figure_module.Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1], [1, 0])
    _run, rows = _log(tmp_path, {"fig": mlop.Image(figure), "axes": mlop.Image(figure.axes[0])})
    for row in rows:
        assert _pixels(row["path"]).shape[:2] == (50, 100)


def test_pyplot_means_its_current_figure(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(1, 2), dpi=40)
    plt.plot([0, 1])
    try:
        image = mlop.Image(plt, caption="curve")
    finally:
        plt.close("all")
    _run, [row] = _log(tmp_path, {"plot": image})
    assert _pixels(row["path"]).shape[:2] == (80, 40)


def test_a_list_is_a_group_with_sample_indexes(tmp_path: Path) -> None:
    images = [mlop.Image(np.full((4, 4), i * 50, dtype=np.uint8)) for i in range(3)]
    _run, rows = _log(tmp_path, {"batch": images})
    rows.sort(key=lambda r: r["sample_index"])
    assert [r["sample_index"] for r in rows] == [0, 1, 2]
    for i, row in enumerate(rows):
        assert (_pixels(row["path"]) == i * 50).all()
    assert len({r["fileName"] for r in rows}) == 3


def test_the_same_image_twice_is_stored_once(tmp_path: Path) -> None:
    array = _rgb()
    run, rows = _log(tmp_path, {"a": mlop.Image(array), "b": mlop.Image(array.copy())})
    assert len(rows) == 2
    assert rows[0]["path"] == rows[1]["path"]
    assert rows[0]["fileName"] != rows[1]["fileName"]
    assert len([p for p in (run.dir / "media").rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ("no/such/file.png", FileNotFoundError, "no such file"),
        (np.zeros((2, 3, 4, 5, 6)), ValueError, "a batch of them"),
        (np.zeros((5, 5, 7)), ValueError, "(H, W)"),
        (np.zeros((0, 4)), ValueError, "empty"),
        (np.array([["a", "b"]]), ValueError, "dtype"),
        (b"not an image", ValueError, "not an image"),
        (object(), TypeError, "object"),
    ],
)
def test_bad_input_fails_when_the_value_is_made(data: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        mlop.Image(data)


class _Broken(Loggable):
    log_type = "IMAGE"

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        raise RuntimeError("cannot store this")


def test_a_value_that_fails_to_store_leaves_the_rest_of_the_dict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mlop")
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log({"loss": 1.0, "bad": _Broken(), "img": mlop.Image(_rgb())})
    run.finish()
    reader = mlop.open_run(run.dir)
    assert [r["key"] for r in reader.media()] == ["img"]
    assert [r["value"] for r in reader.metrics("loss")] == [1.0]
    reader.close()
    assert "cannot store this" in caplog.text


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match=r"mlop\.Image needs PIL.*mlop-core\[media\]"):
        mlop.Image(b"\x89PNG")
    with pytest.raises(ImportError, match=r"mlop-core\[media\]"):
        mlop.Image(np.zeros((2, 2), dtype=np.uint8))


def test_import_mlop_loads_neither_numpy_nor_pillow() -> None:
    code = "import sys, mlop; print(sorted({'numpy', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_tensors_without_their_plugin(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    chw = torch.rand(3, 8, 10, requires_grad=True)
    half = torch.linspace(0, 1, 16, dtype=torch.bfloat16).reshape(4, 4)
    _run, rows = _log(tmp_path, {"chw": mlop.Image(chw), "bf16": mlop.Image(half)})
    by_key = {r["key"]: r for r in rows}
    expected = np.rint(chw.detach().numpy().astype(np.float64).transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_pixels(by_key["chw"]["path"]), expected)
    assert _pixels(by_key["bf16"]["path"]).shape == (4, 4)
    assert sum(mlop.Histogram(torch.arange(10.0), bins=2).to_dict()["freq"]) == 10


def _cells(grid: np.ndarray[Any, Any], count: int, height: int, width: int) -> list[np.ndarray[Any, Any]]:
    """Cut a grid of ``count`` images back into its images (rows of ceil(sqrt(count)), 2-pixel gaps)."""
    cols = int(np.ceil(np.sqrt(count)))
    return [
        grid[
            (i // cols) * (height + 2) : (i // cols) * (height + 2) + height,
            (i % cols) * (width + 2) : (i % cols) * (width + 2) + width,
        ]
        for i in range(count)
    ]


def test_a_batch_of_images_is_one_grid(tmp_path: Path) -> None:
    batch = np.random.default_rng(3).integers(0, 256, (5, 3, 9, 7), dtype=np.uint8)  # N, C, H, W
    _run, rows = _log(tmp_path, {"samples": mlop.Image(batch, caption="batch")})
    (row,) = rows
    grid = _pixels(row["path"])
    assert grid.shape == (2 * 9 + 2, 3 * 7 + 4, 3)  # 3 columns, 2 rows, 2-pixel gaps
    for cell, image in zip(_cells(grid, 5, 9, 7), batch, strict=True):
        assert np.array_equal(cell, image.transpose(1, 2, 0))
    assert not grid[9:11].any()  # the gap between rows is black


def test_a_torch_nchw_batch_is_one_grid(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    batch = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))  # floats in [0, 1], grey
    _run, rows = _log(tmp_path, {"samples": mlop.Image(batch)})
    grid = _pixels(rows[0]["path"])
    assert grid.shape == (14, 14)
    expected = np.rint(batch.numpy()[:, 0] * 255).astype(np.uint8)
    for cell, image in zip(_cells(grid, 4, 6, 6), expected, strict=True):
        assert np.array_equal(cell, image)
