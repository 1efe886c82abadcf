"""mlop.Audio: samples become a WAV file with the same samples and rate; files are kept as they are."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
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


def _read_wav(path: str) -> tuple[int, int, np.ndarray[Any, Any]]:
    with wave.open(path, "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    return rate, channels, np.frombuffer(raw, dtype=dtype).reshape(-1, channels)


def test_int16_mono_round_trips_exactly(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).integers(-32768, 32767, 4000, dtype=np.int16)
    [row] = _log(tmp_path, {"tts": mlop.Audio(samples, rate=16000, caption="hello")})
    assert row["type"] == "AUDIO" and row["fileType"] == "wav" and row["caption"] == "hello"
    rate, channels, read = _read_wav(row["path"])
    assert (rate, channels) == (16000, 1)
    np.testing.assert_array_equal(read[:, 0], samples)
    assert row["rate"] == 16000 and row["duration"] == pytest.approx(0.25)


def test_float_stereo_becomes_16_bit_samples(tmp_path: Path) -> None:
    t = np.linspace(0, 1, 8000, endpoint=False)
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.cos(2 * np.pi * 220 * t)], axis=1)
    rows = _log(
        tmp_path,
        {
            "frames_first": mlop.Audio(stereo, sample_rate=8000),
            "channels_first": mlop.Audio(stereo.T.astype(np.float32), 8000),
        },
    )
    for row in rows:
        rate, channels, read = _read_wav(row["path"])
        assert (rate, channels) == (8000, 2)
        np.testing.assert_allclose(read / 32767.0, stereo, atol=1.0 / 32767 + 1e-6)


def test_int32_and_uint8_keep_their_width(tmp_path: Path) -> None:
    wide = np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32)
    narrow = np.array([0, 128, 255], dtype=np.uint8)
    rows = {r["key"]: r for r in _log(tmp_path, {"w": mlop.Audio(wide, 100), "n": mlop.Audio(narrow, 100)})}
    np.testing.assert_array_equal(_read_wav(rows["w"]["path"])[2][:, 0], wide)
    np.testing.assert_array_equal(_read_wav(rows["n"]["path"])[2][:, 0], narrow)


def test_a_loud_float_signal_is_scaled_not_clipped(tmp_path: Path) -> None:
    [row] = _log(tmp_path, {"a": mlop.Audio(np.array([0.0, 2.0, -4.0]), 10)})
    np.testing.assert_array_equal(_read_wav(row["path"])[2][:, 0], [0, 16384, -32767])


def test_an_audio_file_is_kept_as_it_is(tmp_path: Path) -> None:
    source = tmp_path / "clip.flac"
    source.write_bytes(b"fLaC fake but kept byte for byte")
    [row] = _log(tmp_path, {"clip": mlop.Audio(str(source))})
    assert Path(row["path"]).read_bytes() == source.read_bytes()
    assert row["fileType"] == "flac"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"data": np.zeros(10)}, ValueError, "sample rate"),
        ({"data": np.zeros(10), "rate": 0}, ValueError, "positive integer"),
        ({"data": np.zeros(10), "rate": 10, "sample_rate": 20}, ValueError, "disagree"),
        ({"data": np.zeros((2, 3, 4)), "rate": 10}, ValueError, "shape"),
        ({"data": np.zeros((40, 50)), "rate": 10}, ValueError, "channels"),
        ({"data": np.zeros(0), "rate": 10}, ValueError, "no samples"),
        ({"data": "missing.wav"}, FileNotFoundError, "no such file"),
        ({"data": 3.0, "rate": 10}, TypeError, "float"),
    ],
)
def test_bad_input_fails_when_the_value_is_made(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        mlop.Audio(**kwargs)
