"""``mlop.Video``: a clip from a file, or from an array of frames written as GIF or MP4."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._data._buffers import copy_array
from mlop._data._common import Media, Source, as_array, optional, read_source
from mlop._data._image import to_uint8

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Video", "mp4_available"]

_WHAT: Final = "mlop.Video"
_FORMATS: Final = ("gif", "mp4")
_CHANNELS: Final = (1, 3, 4)
DEFAULT_FPS: Final = 30


def mp4_available() -> bool:
    """Whether the optional MP4 encoder (imageio-ffmpeg, from ``mlop-core[media]``) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def video_layout(shape: tuple[int, ...]) -> tuple[bool, bool]:
    """Whether ``shape`` has a leading batch axis and whether channels come before height and width.

    Takes (T, H, W, C), (T, C, H, W) and batches of them (B, T, ...), with C in 1, 3, 4.

    Raises:
        ValueError: the shape is not a video's.
    """
    if len(shape) not in (4, 5) or any(n == 0 for n in shape):
        raise ValueError(
            f"{_WHAT} takes frames of shape (T, H, W, C), (T, C, H, W) or a batch (B, T, ...) with C in "
            f"1, 3, 4, not {shape}"
        )
    frame = shape[-3:]
    if frame[2] not in _CHANNELS and frame[0] not in _CHANNELS:
        raise ValueError(f"{_WHAT}: frames of shape {frame} have no channel axis of 1, 3 or 4")
    channels_first = frame[2] not in _CHANNELS
    return len(shape) == 5, channels_first


def frames_rgb(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """(T, H, W, 3) uint8 frames; a batch is tiled into a grid, as close to square as it goes."""
    import numpy as np

    batched, channels_first = video_layout(array.shape)
    if not batched:
        array = array[None]
    if channels_first:
        array = array.transpose(0, 1, 3, 4, 2)
    array = to_uint8(array)
    count, steps, height, width, channels = array.shape
    if channels == 1:
        array = np.repeat(array, 3, axis=4)
    elif channels == 4:
        array = array[..., :3]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    if rows * cols != count:
        pad = np.zeros((rows * cols - count, steps, height, width, 3), dtype=np.uint8)
        array = np.concatenate([array, pad])
    grid = array.reshape(rows, cols, steps, height, width, 3).transpose(2, 0, 3, 1, 4, 5)
    return np.ascontiguousarray(grid.reshape(steps, rows * height, cols * width, 3))


def encode_gif(frames: npt.NDArray[Any], fps: float) -> bytes:
    """An endlessly looping GIF of (T, H, W, 3) uint8 frames."""
    pil = optional("PIL.Image", _WHAT)
    images = [pil.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1000.0 / fps, 10.0),
        loop=0,
        optimize=False,
    )
    return out.getvalue()


def encode_mp4(frames: npt.NDArray[Any], fps: float, folder: Path) -> Path:
    """Write an H.264 MP4 of (T, H, W, 3) uint8 frames into ``folder`` and return its path."""
    import numpy as np

    ffmpeg = optional("imageio_ffmpeg", _WHAT)
    _steps, height, width, _ = frames.shape
    # yuv420p, which every player takes, needs even sides.
    if height % 2 or width % 2:
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".mp4", dir=folder, prefix=".video-")
    os.close(fd)
    writer = ffmpeg.write_frames(
        name,
        (frames.shape[2], frames.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=2,
        output_params=["-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return Path(name)


class Video(Media):
    """A video, stored as a file of the run.

    Args:
        data: a path to a video file (kept as it is), or frames: an array of shape (T, H, W, C) or
            (T, C, H, W) with C in 1, 3, 4, or a batch of them (B, T, ...) shown as a grid; pixel values
            as :class:`mlop.Image` takes them.
        rate: frames per second (default 30). Also taken as ``fps``.
        caption: shown with the video; also names the uploaded file.
        format: ``"gif"`` or ``"mp4"`` for frames; by default MP4 when the optional encoder
            (imageio-ffmpeg, in ``mlop-core[media]``) is installed, else GIF. A GIF shows identical
            consecutive frames as one frame of their summed duration (pillow merges them).

    Raises:
        FileNotFoundError: ``data`` is a path with no file.
        ValueError: frames of an impossible shape, an unknown format, a rate that is not positive.
        ImportError: numpy or pillow is missing, or MP4 was asked for without its encoder.
    """

    log_type: ClassVar[str] = "VIDEO"

    def __init__(
        self,
        data: Any,
        rate: float | None = None,
        caption: str | None = None,
        format: str | None = None,
        *,
        fps: float | None = None,
    ) -> None:
        super().__init__(caption)
        if rate is not None and fps is not None and rate != fps:
            raise ValueError(f"{_WHAT}: rate={rate} and fps={fps} disagree")
        rate = rate if rate is not None else fps
        if rate is not None and (isinstance(rate, bool) or not rate > 0 or not math.isfinite(rate)):
            raise ValueError(f"{_WHAT}: the frame rate must be a positive number, got {rate!r}")
        self.rate: float = float(rate) if rate is not None else DEFAULT_FPS
        self._file: Source | None = None
        self._array: npt.NDArray[Any] | None = None
        if isinstance(data, (str, os.PathLike)):
            self._file = read_source(data, _WHAT, "mp4")
            self.format = self._file.ext
            return
        if format is not None and format.lower() not in _FORMATS:
            raise ValueError(f"{_WHAT}: format must be one of {', '.join(_FORMATS)}, not {format!r}")
        self.format = format.lower() if format else ("mp4" if mp4_available() else "gif")
        if self.format == "gif":
            optional("PIL.Image", _WHAT)
        else:
            optional("imageio_ffmpeg", f"{_WHAT} (MP4)")
        array = as_array(data, _WHAT)
        video_layout(array.shape)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{_WHAT} takes frames of numbers, not of dtype {array.dtype}")
        self._array = copy_array(array)
        self._nbytes = array.nbytes

    def _release(self) -> None:
        self._array = None

    def _encode(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        if self._file is not None:
            return self._file, self._file.ext, {}
        assert self._array is not None
        frames = frames_rgb(self._array)
        extra = {"frames": int(frames.shape[0]), "fps": self.rate}
        if self.format == "gif":
            return encode_gif(frames, self.rate), "gif", extra
        path = encode_mp4(frames, self.rate, Path(tempfile.gettempdir()))
        try:
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        return data, "mp4", extra
