"""``mlop.Audio``: a sound from a file, or from an array of samples written as WAV."""

from __future__ import annotations

import io
import os
import wave
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._data._buffers import copy_array
from mlop._data._common import Media, Source, as_array, read_source

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Audio", "encode_wav"]

_WHAT: Final = "mlop.Audio"
#: At most this many channels; a 2-D array with more rows than that and few columns is (samples, channels).
_MAX_CHANNELS: Final = 32


def _frames(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Samples as (frames, channels) from (frames,), (frames, channels) or (channels, frames)."""
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        if array.shape[1] <= _MAX_CHANNELS:
            return array
        if array.shape[0] <= _MAX_CHANNELS:
            return array.T
    raise ValueError(
        f"{_WHAT} takes samples of shape (n,), (n, channels) or (channels, n) with at most "
        f"{_MAX_CHANNELS} channels, not {array.shape}"
    )


def encode_wav(array: npt.NDArray[Any], rate: int) -> bytes:
    """WAV (PCM) bytes of samples in a layout :func:`_frames` takes.

    int16, int32 and uint8 samples are written as they are; floats (in [-1, 1]; a louder signal is scaled
    down to fit) as 16-bit samples; other integers as 32-bit ones.
    """
    import numpy as np

    frames = _frames(array)
    if frames.dtype in (np.int16, np.int32, np.uint8):
        pcm = frames
    elif frames.dtype.kind == "f":
        values = np.nan_to_num(frames.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
        peak = float(np.abs(values).max()) if values.size else 0.0
        if peak > 1.0:
            values = values / peak
        pcm = np.rint(values * 32767.0).astype(np.int16)
    elif frames.dtype == np.bool_:
        pcm = frames.astype(np.uint8) * np.uint8(255)
    else:
        pcm = np.clip(frames, -(2**31), 2**31 - 1).astype(np.int32)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(pcm.shape[1])
        wav.setsampwidth(pcm.dtype.itemsize)
        wav.setframerate(rate)
        wav.writeframes(np.ascontiguousarray(pcm.astype(pcm.dtype.newbyteorder("<"))).tobytes())
    return out.getvalue()


class Audio(Media):
    """A sound, stored as a file of the run (WAV when it comes as samples).

    Args:
        data: a path to an audio file (kept as it is), or samples: an array of shape (n,) (mono),
            (n, channels) or (channels, n); floats in [-1, 1], or int16, int32, uint8 PCM.
        rate: the sample rate in Hz; needed for samples. Also taken as ``sample_rate``.
        caption: shown with the sound; also names the uploaded file.

    Raises:
        FileNotFoundError: ``data`` is a path with no file.
        ValueError: no rate for samples, or samples of an impossible shape.
        TypeError: ``data`` is of a type Audio does not take.
        ImportError: numpy is missing (``pip install 'mlop-core[media]'``).
    """

    log_type: ClassVar[str] = "AUDIO"

    def __init__(
        self,
        data: Any,
        rate: int | None = None,
        caption: str | None = None,
        *,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__(caption)
        if rate is not None and sample_rate is not None and rate != sample_rate:
            raise ValueError(f"{_WHAT}: rate={rate} and sample_rate={sample_rate} disagree")
        rate = rate if rate is not None else sample_rate
        self._file: Source | None = None
        self._array: npt.NDArray[Any] | None = None
        self.rate: int | None = None
        if isinstance(data, (str, os.PathLike)):
            self._file = read_source(data, _WHAT, "wav")
            if rate is not None:
                self.rate = int(rate)
            return
        array = as_array(data, _WHAT)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{_WHAT} takes samples as numbers, not of dtype {array.dtype}")
        if array.size == 0:
            raise ValueError(f"{_WHAT}: no samples")
        _frames(array)
        if rate is None:
            raise ValueError(f"{_WHAT}: samples need a sample rate: Audio(samples, rate=16000)")
        if isinstance(rate, bool) or int(rate) != rate or not 0 < int(rate) <= 4_294_967_295:
            raise ValueError(f"{_WHAT}: the sample rate must be a positive integer, got {rate!r}")
        self.rate = int(rate)
        self._array = copy_array(array)
        self._nbytes = array.nbytes

    def _release(self) -> None:
        self._array = None

    def _encode(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        if self._file is not None:
            return self._file, self._file.ext, {"rate": self.rate} if self.rate else {}
        assert self._array is not None and self.rate is not None
        frames = _frames(self._array)
        extra = {"rate": self.rate, "channels": int(frames.shape[1]), "duration": frames.shape[0] / self.rate}
        return encode_wav(self._array, self.rate), "wav", extra
