"""Every data type mlop logs, in one short offline run, read back at the end.

Images, a sound, a video, a text document, an artifact directory, a histogram, a table and a graph. The
files land content-addressed in ./.mlop/media-demo/<run id>/media/; histograms, tables and graphs in the
run's store, as the server protocol's payloads.

Run: .venv/bin/python examples/media.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import mlop


def main() -> None:
    rng = np.random.default_rng(0)
    run = mlop.init(project="media-demo", config={"steps": 5})
    ys, xs = np.mgrid[0:64, 0:64]
    for step in range(5):
        # A (H, W, C) uint8 array, a float array in [0, 1] and a (C, H, W) array all work.
        picture = np.stack([xs * 4, ys * 4, np.full_like(xs, step * 50)], axis=-1).astype(np.uint8)
        weights = rng.normal(loc=step * 0.1, size=10_000)
        run.log(
            {
                "samples/picture": mlop.Image(picture, caption=f"step {step}"),
                "samples/batch": [mlop.Image(rng.random((32, 32))) for _ in range(4)],
                "weights": mlop.Histogram(weights, bins=32),
                "loss": 1.0 / (step + 1),
            }
        )

    t = np.linspace(0, 1, 16_000, endpoint=False)
    frames = (np.sin(xs[None] / 6 + np.arange(12)[:, None, None]) * 127 + 128).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        export = Path(folder) / "export"
        (export / "weights").mkdir(parents=True)
        (export / "config.json").write_text('{"hidden": 64}')
        (export / "weights" / "model.bin").write_bytes(rng.bytes(4096))
        run.log(
            {
                "audio/tone": mlop.Audio(np.sin(2 * np.pi * 440 * t), rate=16_000, caption="A4"),
                "video/waves": mlop.Video(frames[..., None], fps=8, format="gif"),
                "text/notes": mlop.Text("the loss went down\nthe pictures got bluer"),
                "model": mlop.Artifact(export, metadata={"format": "raw", "epoch": 5}),
                "eval/predictions": mlop.Table(
                    [[0, "cat", 0.91], [1, "dog", 0.55]], columns=["id", "label", "score"]
                ),
                "graph/pipeline": mlop.Graph(edges=[("load", "train"), ("train", "eval")]),
            }
        )
        run.finish()  # waits for the media threads: every file is on disk when it returns

    reader = mlop.open_run(run.dir)
    for row in reader.media():
        print(f"{row['type']:8} {row['key']:18} step {row['step']}  {Path(row['path']).name[:20]}...")
    for row in reader.data():
        print(f"{row['type']:9} {row['key']:18} step {row['step']}  {sorted(row['value'])}")
    reader.close()


if __name__ == "__main__":
    main()
