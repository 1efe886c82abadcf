"""``mlop.Image``: a picture from a path, bytes, a PIL image, an array or a matplotlib figure."""

from __future__ import annotations

import io
import math
import os
import types
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._data._buffers import copy_array
from mlop._data._common import Media, Source, as_array, optional, read_source

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Image", "to_uint8"]

_WHAT: Final = "mlop.Image"
#: PNG's zlib level: 3 is as fast as 1 on photos and noise and compresses flat areas nearly as well as 6.
_PNG_LEVEL: Final = 3
_EXTENSIONS: Final = {"jpeg": "jpg", "tiff": "tif"}
_PNG_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


def to_uint8(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Pixel values as uint8: floats in [0, 1] are scaled by 255, other ranges stretched to 0..255.

    Integers already in 0..255 and booleans (as 0 and 255) keep their values; NaN becomes 0.
    """
    import numpy as np

    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.size == 0:
        return array.astype(np.uint8)
    low: float
    high: float
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        values = array.astype(np.float64)
    else:
        values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return np.rint(values * 255.0).astype(np.uint8)
    span = float(high - low) or 1.0
    return np.rint((values - low) * (255.0 / span)).astype(np.uint8)


def image_layout(shape: tuple[int, ...], what: str = _WHAT) -> tuple[int, ...]:
    """The axes order that makes ``shape`` height × width (× channels), or raise for an impossible shape.

    Takes (H, W), (H, W, C) and (C, H, W) with C in 1, 3, 4, and a leading batch axis (N, ...): a batch
    of more than one image is drawn as a grid.
    """
    if len(shape) == 4 and shape[0] >= 1:
        return (0, *(a + 1 for a in image_layout(shape[1:], what)))
    if len(shape) == 2:
        axes: tuple[int, ...] = (0, 1)
    elif len(shape) == 3 and shape[2] in (1, 3, 4):
        axes = (0, 1, 2)
    elif len(shape) == 3 and shape[0] in (1, 3, 4):
        axes = (1, 2, 0)
    else:
        raise ValueError(
            f"{what} takes an array of shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 "
            f"(or a batch of them, (N, ...)), not {shape}"
        )
    if any(shape[a] == 0 for a in axes):
        raise ValueError(f"{what}: an image cannot be empty, got shape {shape}")
    return axes


#: Pixels between the images of a batch drawn as a grid.
_GRID_GAP: Final = 2


def _grid(batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Images (N, H, W[, C]) side by side in rows of ceil(sqrt(N)), with a black gap between them."""
    import numpy as np

    count, height, width = batch.shape[:3]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    step_y, step_x = height + _GRID_GAP, width + _GRID_GAP
    out = np.zeros((rows * step_y - _GRID_GAP, cols * step_x - _GRID_GAP, *batch.shape[3:]), batch.dtype)
    for index in range(count):
        row, col = divmod(index, cols)
        out[row * step_y : row * step_y + height, col * step_x : col * step_x + width] = batch[index]
    return out


def _pixels(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """An (H, W) or (H, W, C) uint8 array of an array whose shape :func:`image_layout` accepted.

    A batch of several images becomes one grid, its pixel values scaled together.
    """
    axes = image_layout(array.shape)
    if axes != tuple(range(len(axes))):
        array = array.transpose(axes)
    if array.ndim >= 3 and array.shape[-1] == 1:  # one channel: grey
        array = array[..., 0]
    if len(axes) == 4:
        array = to_uint8(array)
        return array[0] if array.shape[0] == 1 else _grid(array)
    return to_uint8(array)


def encode_png(array: npt.NDArray[Any]) -> bytes:
    """PNG bytes of an (H, W) or (H, W, 1/3/4) array (any dtype; see :func:`to_uint8`)."""
    pil = optional("PIL.Image", _WHAT)
    out = io.BytesIO()
    pil.fromarray(_pixels(array)).save(out, format="PNG", compress_level=_PNG_LEVEL)
    return out.getvalue()


def _is_figure(data: Any) -> bool:
    module = type(data).__module__ or ""
    return module.startswith("matplotlib") and (hasattr(data, "savefig") or hasattr(data, "figure"))


def _is_pyplot(data: Any) -> bool:
    return isinstance(data, types.ModuleType) and data.__name__ == "matplotlib.pyplot"


class Image(Media):
    """An image, stored as a file of the run (PNG unless it came as an encoded file).

    Args:
        data: a path to an image file, its encoded bytes, a PIL image, an array (HW, HWC or CHW with 1, 3
            or 4 channels; floats in [0, 1] or any range, integers, booleans), a matplotlib figure or
            axes, or the ``matplotlib.pyplot`` module (its current figure). Framework tensors go through
            the convert hook of their integration (mlop-torch).
        caption: shown under the image; also names the uploaded file.

    Raises:
        FileNotFoundError: ``data`` is a path with no file.
        ValueError: the array's shape is not an image's, or the bytes or file are not an image.
        TypeError: ``data`` is of a type Image does not take.
        ImportError: pillow or numpy is missing (``pip install 'mlop-core[media]'``).

    Encoding runs on a background thread; making the value copies an array, or renders a figure.
    """

    log_type: ClassVar[str] = "IMAGE"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        super().__init__(caption)
        self._array: npt.NDArray[Any] | None = None
        self._pil: Any = None
        self._file: Source | None = None
        if isinstance(data, (str, os.PathLike)):
            self._file = read_source(data, _WHAT, "png")
            self._check_encoded(self._file)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            self._file = Source(raw, None, "png", len(raw))
            self._check_encoded(self._file)
        elif _is_figure(data) or _is_pyplot(data):
            self._file = self._render(data)
        elif type(data).__module__.startswith("PIL.") and hasattr(data, "getbands"):
            self._pil = data.copy()
            self._nbytes = len(data.getbands()) * data.width * data.height
        else:
            array = as_array(data, _WHAT)
            optional("PIL.Image", _WHAT)
            image_layout(array.shape)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"{_WHAT} takes an array of numbers, not of dtype {array.dtype}")
            self._array = copy_array(array)
            self._nbytes = array.nbytes

    @staticmethod
    def _check_encoded(source: Source) -> None:
        pil = optional("PIL.Image", _WHAT)
        try:
            if source.data is not None:
                fmt = pil.open(io.BytesIO(source.data)).format
            else:
                with pil.open(source.path) as opened:
                    fmt = opened.format
        except Exception as exc:  # broad: pillow raises several types for a file that is not an image
            raise ValueError(f"{_WHAT}: the data is not an image pillow can read: {exc}") from exc
        name = str(fmt or "png").lower()
        source.ext = _EXTENSIONS.get(name, name)

    @staticmethod
    def _render(data: Any) -> Source:
        figure = data.gcf() if hasattr(data, "gcf") else data
        figure = getattr(figure, "figure", figure) if not hasattr(figure, "savefig") else figure
        out = io.BytesIO()
        figure.savefig(out, format="png")
        raw = out.getvalue()
        return Source(raw, None, "png", len(raw))

    def _release(self) -> None:
        self._array = None
        self._pil = None

    def _encode(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        if self._file is not None:
            return self._file, self._file.ext, {}
        pil = optional("PIL.Image", _WHAT)
        if self._array is not None:
            data = encode_png(self._array)
        else:
            image = self._pil
            if image.mode not in _PNG_MODES:
                import numpy as np

                image = (
                    pil.fromarray(to_uint8(np.asarray(image)))
                    if image.mode == "F"
                    else image.convert("RGBA" if "A" in image.getbands() else "RGB")
                )
            out = io.BytesIO()
            image.save(out, format="PNG", compress_level=_PNG_LEVEL)
            data = out.getvalue()
        return data, "png", {}

    def to_bytes(self) -> bytes:
        """The bytes stored for this image, encoded now: PNG, or the file's own format when it came as one."""
        payload, _ext, _extra = self.encoded()
        if isinstance(payload, Source):
            if payload.data is not None:
                return payload.data
            assert payload.path is not None
            return payload.path.read_bytes()
        return payload
