"""``import mlop.compat.wandb as wandb``: wandb scripts run unchanged on mlop, read back with open_run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlop
from mlop.compat import UnsupportedError, wandb

SCRIPT = textwrap.dedent(
    """
    import argparse
    import numpy as np
    import mlop.compat.wandb as wandb

    args = argparse.Namespace(lr=0.01, epochs=3)
    run = wandb.init(project="vision", name="resnet-a", config=args, tags=["baseline"], group="sweep-1",
                     job_type="train", notes="first try", dir=".", mode="offline", entity="acme")
    wandb.config.batch_size = 32
    wandb.config["dropout"] = 0.1
    wandb.config.update({"optimizer": "adam"})
    assert wandb.config.lr == 0.01 and wandb.config["epochs"] == 3 and "dropout" in wandb.config

    wandb.define_metric("epoch")
    wandb.define_metric("val/*", step_metric="epoch", summary="max")
    for epoch in range(args.epochs):
        for batch in range(4):
            wandb.log({"train/loss": 1.0 / (epoch * 4 + batch + 1), "train/lr": np.float32(0.01)})
        wandb.log({"val/acc": 0.5 + 0.1 * epoch, "epoch": epoch})
    assert wandb.run.step == 15

    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    images = [wandb.Image(pixels, caption="a"), wandb.Image(pixels[::-1], caption="b")]
    wandb.log({"samples": images}, commit=False)
    table = wandb.Table(columns=["id", "label"])
    table.add_data(1, "cat")
    table.add_data(2, "dog")
    wandb.log({"predictions": table, "weights": wandb.Histogram(np.arange(10), num_bins=5)})
    wandb.log({"late": 1.5}, step=40)

    with open("model.txt", "w") as f:
        f.write("weights")
    artifact = wandb.Artifact("model", type="model", metadata={"acc": 0.7})
    artifact.add_file("model.txt")
    run.log_artifact(artifact, aliases=["best"])
    with open(f"{wandb.run.dir}/notes.md", "w") as f:
        f.write("# notes")
    wandb.run.summary["best_acc"] = 0.7
    wandb.alert(title="done", text="accuracy 0.7", level=wandb.AlertLevel.WARN)
    print("RUN", run.id, run.project, run.name)
    wandb.finish()
    """
)


def _read(base: Path) -> mlop.RunReader:
    (run,) = mlop.list_runs(base)
    return run


def test_a_wandb_script_runs_unchanged(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "WANDB_"))}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "RUN" in done.stdout

    run = _read(tmp_path)
    assert (run.project, run.name, run.status) == ("vision", "resnet-a", "COMPLETED")
    assert run.tags == ["baseline", "group:sweep-1", "job_type:train"]
    config = run.config
    assert {k: config[k] for k in ("lr", "epochs", "batch_size", "dropout", "optimizer", "notes")} == {
        "lr": 0.01,
        "epochs": 3,
        "batch_size": 32,
        "dropout": 0.1,
        "optimizer": "adam",
        "notes": "first try",
    }
    assert config["summary"] == {"best_acc": 0.7, "val/acc": {"max": pytest.approx(0.7)}}

    loss = [(m["step"], m["value"]) for m in run.metrics("train/loss")]
    expected_steps = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13]  # each epoch's val call takes a step
    assert loss == [(s, 1.0 / (i + 1)) for i, s in enumerate(expected_steps)]
    assert [m["value"] for m in run.metrics("train/lr")] == pytest.approx([0.01] * 12)
    # val/acc is stored against its step metric, the epoch.
    assert [(m["step"], m["value"]) for m in run.metrics("val/acc")] == [
        (0, 0.5),
        (1, 0.6),
        (2, pytest.approx(0.7)),
    ]
    assert [(m["step"], m["value"]) for m in run.metrics("epoch")] == [(4, 0), (9, 1), (14, 2)]
    assert [(m["step"], m["value"]) for m in run.metrics("late")] == [(40, 1.5)]

    samples = sorted(run.media("samples"), key=lambda m: m["sample_index"])  # encoded in parallel
    assert [(m["step"], m["caption"], m["sample_index"]) for m in samples] == [(15, "a", 0), (15, "b", 1)]
    assert all(Path(m["path"]).read_bytes().startswith(b"\x89PNG") for m in samples)
    (table,) = run.data("predictions")
    assert table["step"] == 15 and table["value"]["table"] == [[1, "cat"], [2, "dog"]]
    assert [c["name"] for c in table["value"]["col"]] == ["id", "label"]
    (hist,) = run.data("weights")
    assert hist["value"]["freq"] == [2, 2, 2, 2, 2]

    (artifact,) = run.media("artifacts/model")
    assert Path(artifact["path"]).read_bytes() == b"weights"
    assert artifact["metadata"]["type"] == "model" and artifact["metadata"]["aliases"] == ["best"]
    assert artifact["metadata"]["metadata"] == {"acc": 0.7}
    (notes,) = run.media("files/notes.md")
    assert Path(notes["path"]).read_bytes() == b"# notes"
    (alert,) = run.alerts()
    assert (alert["title"], alert["body"], alert["level"]) == ("done", "accuracy 0.7", "WARN")


def test_steps_follow_wandbs_rules(tmp_path: Path) -> None:
    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    wandb.log({"a": 1}, commit=False)
    wandb.log({"b": 2})  # commits step 0 with a and b
    wandb.log({"c": 3}, step=5)  # step 5 becomes current, not committed yet
    wandb.log({"d": 4})  # still step 5, then committed
    wandb.log({"e": 5})
    wandb.log({"old": 6}, step=2)  # lower than the current step: wandb drops it, mlop keeps it
    assert run.step == 7
    wandb.finish()
    reader = _read(tmp_path)
    got = {m["key"]: m["step"] for m in reader.metrics(system=False)}
    assert got == {"a": 0, "b": 0, "c": 5, "d": 5, "e": 6, "old": 2}
    assert wandb.run is None


def test_unsupported_calls_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(wandb.Error, match=r"wandb\.init\(\) before wandb\.log\(\)"):
        wandb.log({"x": 1})
    with pytest.raises(wandb.Error):
        wandb.config.lr = 1
    with pytest.raises(UnsupportedError, match=r"wandb\.plot"):
        wandb.plot.line  # noqa: B018
    with pytest.raises(UnsupportedError, match=r"wandb\.Api"):
        wandb.Api()
    assert not hasattr(wandb, "Object3D")  # still an AttributeError for hasattr and getattr
    with pytest.raises(UnsupportedError, match=r"sync_tensorboard"):
        wandb.init(project="p", dir=tmp_path, sync_tensorboard=True)
    with pytest.raises(TypeError, match="not_a_wandb_argument"):
        wandb.init(project="p", dir=tmp_path, not_a_wandb_argument=1)
    with pytest.raises(UnsupportedError, match=r"boxes"):
        wandb.Image([[0, 1], [1, 0]], boxes={"predictions": {}})

    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    with pytest.raises(UnsupportedError, match=r"wandb\.run\.log_code"):
        run.log_code(".")
    with pytest.raises(UnsupportedError, match=r"renaming"):
        run.name = "other"
    with pytest.raises(UnsupportedError, match=r"use_artifact"):
        run.use_artifact("model:latest")
    with pytest.raises(UnsupportedError, match="add_reference"):
        wandb.Artifact("data", type="dataset").add_reference("s3://bucket/key")
    wandb.finish()


def test_resume_modes(tmp_path: Path) -> None:
    first = wandb.init(project="p", id="run-1", dir=tmp_path, mode="offline", config={"a": 1})
    first.log({"x": 1.0})
    first.finish()
    with pytest.raises(mlop.RunExistsError):
        wandb.init(project="p", id="run-1", dir=tmp_path, mode="offline", resume="never")
    with pytest.raises(wandb.Error, match="must"):
        wandb.init(project="p", id="unknown", dir=tmp_path, mode="offline", resume="must")
    again = wandb.init(project="p", id="run-1", dir=tmp_path, mode="offline", resume="allow", config={"b": 2})
    assert again.resumed and again.id == "run-1" and again.step == 1  # goes on after the last step
    again.log({"x": 2.0})
    again.finish()
    reader = _read(tmp_path)
    assert reader.config == {"a": 1, "b": 2}
    assert [(m["step"], m["value"]) for m in reader.metrics("x")] == [(0, 1.0), (1, 2.0)]


def test_context_manager_marks_failures(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), wandb.init(project="p", dir=tmp_path, mode="offline") as run:
        run.log({"x": 1})
        raise RuntimeError("diverged")
    reader = _read(tmp_path)
    assert reader.status == "FAILED" and reader.status_metadata["message"] == "diverged"


def test_disabled_mode_and_tags(tmp_path: Path) -> None:
    run = wandb.init(project="p", dir=tmp_path, mode="disabled")
    run.log({"x": 1})
    wandb.finish()
    assert not (tmp_path / ".mlop").exists()

    run = wandb.init(project="p", dir=tmp_path, mode="offline", tags=["a", "b"])
    run.tags = ("b", "c")
    run.finish()
    assert _read(tmp_path).tags == ["b", "c"]


def test_login_stores_an_mlop_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOP_CONFIG_DIR", str(tmp_path / "config"))
    assert wandb.login() is False
    assert wandb.login(key="mlps_test_key", host="127.0.0.1") is True
    from mlop._online._auth import load_credentials

    stored = load_credentials()
    assert stored is not None and (stored.api_key, stored.host) == ("mlps_test_key", "127.0.0.1")
    assert wandb.login() is True


def test_watch_delegates_to_the_torch_integration(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("mlop_torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wandb.watch(model, log="all", log_freq=1)
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(torch.randn(8, 4)).sum()
        loss.backward()
        optimizer.step()
        wandb.log({"loss": loss.item()})
    run.finish()
    keys = {d["key"] for d in _read(tmp_path).data()}
    assert any("weight" in k for k in keys), keys


def test_import_mlop_loads_no_compat_layer() -> None:
    code = (
        "import sys, mlop; "
        "print(sorted(m for m in sys.modules if m.startswith(('mlop.compat', 'mlop_compat', 'neptune'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name", ["mlop.compat", "mlop.compat.wandb", "mlop.compat.neptune", "mlop_compat", "mlop_compat.wandb"]
)
def test_all_lists_the_public_names(name: str) -> None:
    import importlib
    import inspect

    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__)
    for exported in module.__all__:
        getattr(module, exported)
    defined = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__.startswith(("mlop.compat", "mlop_compat"))
    }
    assert defined <= set(module.__all__), sorted(defined - set(module.__all__))


def test_media_types_take_wandbs_arguments(tmp_path: Path) -> None:
    import numpy as np

    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    frames = np.zeros((4, 3, 8, 8), dtype=np.uint8)  # wandb's (T, C, H, W)
    counts, edges = np.histogram(np.arange(100), bins=4)
    wandb.log(
        {
            "clip": wandb.Video(frames, caption="clip", format="gif"),
            "tone": wandb.Audio(np.zeros(800, dtype=np.float32), sample_rate=8000, caption="hush"),
            "gray": wandb.Image(np.full((4, 4), 200, dtype=np.uint8), mode="L"),
            "dist": wandb.Histogram(np_histogram=(counts, edges)),
            "frame": wandb.Table(data=[[1, 2.5]], columns=["a", "b"]),
        }
    )
    run.finish()
    reader = _read(tmp_path)
    types = {m["key"]: (m["type"], Path(m["path"]).suffix) for m in reader.media()}
    assert types == {"clip": ("VIDEO", ".gif"), "tone": ("AUDIO", ".wav"), "gray": ("IMAGE", ".png")}
    (dist,) = reader.data("dist")
    assert dist["value"]["freq"] == [25, 25, 25, 25]
    (frame,) = reader.data("frame")
    assert frame["value"]["table"] == [[1, 2.5]]


def test_define_metric_summaries(tmp_path: Path) -> None:
    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    run.define_metric("loss", summary="min,mean,first,last")
    run.define_metric("acc", summary="best", goal="maximize")
    with pytest.raises(ValueError, match="median"):
        run.define_metric("x", summary="median")
    for value in (3.0, 1.0, 2.0):
        run.log({"loss": value, "acc": -value})
    assert run.summary["loss"] == 2.0  # the last value, as in wandb
    run.finish()
    assert _read(tmp_path).config["summary"] == {
        "loss": {"min": 1.0, "mean": 2.0, "first": 3.0, "last": 2.0},
        "acc": {"max": -1.0},
    }


@pytest.mark.parametrize("ending", ["", "raise SystemExit(0)", "raise RuntimeError('boom')"])
def test_a_script_that_never_calls_finish(tmp_path: Path, ending: str) -> None:
    script = textwrap.dedent(
        f"""
        import mlop.compat.wandb as wandb
        wandb.init(project="p", mode="offline")
        wandb.define_metric("loss", summary="min")
        wandb.save("out.txt")
        for value in (3.0, 1.0, 2.0):
            wandb.log({{"loss": value}})
        with open("out.txt", "w") as f:
            f.write("written after save()")
        {ending}
        """
    )
    (tmp_path / "train.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "WANDB_"))}
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    run = _read(tmp_path)
    assert [m["value"] for m in run.metrics("loss")] == [3.0, 1.0, 2.0]
    if "boom" in ending:
        assert done.returncode == 1 and run.status == "FAILED"
        assert "is finished" not in done.stderr  # no warning from logging into the ended run
    else:
        assert done.returncode == 0, done.stderr
        assert run.status == "COMPLETED"
        assert run.config["summary"] == {"loss": {"min": 1.0}}
        (saved,) = run.media("files/out.txt")
        assert Path(saved["path"]).read_bytes() == b"written after save()"


def test_sequences_of_numbers_become_histograms(tmp_path: Path) -> None:
    import numpy as np

    torch = pytest.importorskip("torch")
    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    run.log(
        {"list": [1, 2, 2, 3], "array": np.arange(8.0), "tensor": torch.ones(5), "scalar": np.float64(2.5)}
    )
    run.finish()
    reader = _read(tmp_path)
    hists = {d["key"]: sum(d["value"]["freq"]) for d in reader.data()}
    assert hists == {"list": 4, "array": 8, "tensor": 5}
    assert [m["value"] for m in reader.metrics("scalar")] == [2.5]
