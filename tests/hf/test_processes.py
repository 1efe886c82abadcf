"""mlop-hf in fresh processes: registration by name at start-up, its cost, its switch, its failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlop

PROGRAMS = Path(__file__).parent / "programs"
PYTHON = sys.executable


def python(
    code: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` in tmp_path with the test's (clean) environment plus ``env``."""
    return subprocess.run(
        [PYTHON, "-c", code],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def modules_at_start(tmp_path: Path, env: dict[str, str] | None = None) -> set[str]:
    done = python("import sys; print(' '.join(sorted(sys.modules)))", tmp_path, env)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_start_up_hook_imports_nothing(tmp_path: Path) -> None:
    assert modules_at_start(tmp_path) == modules_at_start(tmp_path, {"MLOP_HF_DISABLE_AUTOLOAD": "1"})
    code = "import sys; print([type(f).__name__ for f in sys.meta_path][:1])"
    assert python(code, tmp_path).stdout.strip() == "['MlopHfStartupHook']"
    assert "MlopHfStartupHook" not in python(code, tmp_path, {"MLOP_HF_DISABLE_AUTOLOAD": "1"}).stdout


def test_import_mlop_hf_does_not_import_the_frameworks(tmp_path: Path) -> None:
    code = (
        "import sys, mlop_hf; mlop_hf.register(); "
        "print(sorted(m for m in ('transformers', 'accelerate', 'torch', 'mlop') if m in sys.modules))"
    )
    done = python(code, tmp_path, {"MLOP_HF_DISABLE_AUTOLOAD": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_switch_turns_registration_off_and_import_mlop_hf_on(tmp_path: Path) -> None:
    code = (
        "import sys; import accelerate.tracking as t; print('mlop' in t.LOGGER_TYPE_TO_CLASS); "
        "import mlop_hf; print(t.LOGGER_TYPE_TO_CLASS.get('mlop') is mlop_hf.MlopTracker)"
    )
    off = python(code, tmp_path, {"MLOP_HF_DISABLE_AUTOLOAD": "1"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "True"]


def test_a_broken_mlop_install_cannot_break_transformers(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "mlop").mkdir(parents=True)
    (broken / "mlop" / "__init__.py").write_text("raise ImportError('this mlop install is broken')\n")
    code = (
        "import transformers, accelerate.tracking as t; from transformers import TrainingArguments; "
        "args = TrainingArguments(output_dir='out', report_to='all'); "
        "print('mlop' in args.report_to, 'mlop' in t.LOGGER_TYPE_TO_CLASS)"
    )
    done = python(code, tmp_path, {"PYTHONPATH": str(broken)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"]
    assert "Traceback" not in done.stderr


def test_a_broken_mlop_hf_install_cannot_break_start_up_or_the_import(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "mlop_hf").mkdir(parents=True)
    (broken / "mlop_hf" / "__init__.py").write_text("raise RuntimeError('this mlop_hf install is broken')\n")
    # A stand-in for accelerate, found first: the hook reacts to the name, and the test stays fast.
    (broken / "accelerate").mkdir()
    (broken / "accelerate" / "__init__.py").write_text("")
    (broken / "accelerate" / "tracking.py").write_text("LOGGER_TYPE_TO_CLASS = {}\n")
    code = "import accelerate.tracking as t; print(t.LOGGER_TYPE_TO_CLASS)"
    done = python(code, tmp_path, {"PYTHONPATH": str(broken)})
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "{}", "")


def test_report_to_mlop_in_a_fresh_process_reaches_the_server(tmp_path: Path) -> None:
    import httpx

    from mlop_server.testing import ServerProcess

    with ServerProcess(tmp_path / "server") as server:
        env = {
            "MLOP_API_TOKEN": server.key,
            "MLOP_HOST": server.url,
            "MLOP_CONFIG_DIR": str(tmp_path / "config"),
            "MLOP_DISABLE_SYSTEM_METRICS": "1",
        }
        done = subprocess.run(
            [PYTHON, str(PROGRAMS / "train_by_name.py"), str(tmp_path / "out")],
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
        ) as api:
            [listed] = api.get("/api/runs", params={"project": "huggingface"}).json()
            remote = api.get(f"/api/runs/{listed['id']}").json()
            remote_loss = api.get(f"/api/runs/{listed['id']}/metrics", params={"key": "train/loss"}).json()

    [run] = mlop.list_runs(tmp_path)
    assert (run.name, run.project, run.status) == ("by-name", "huggingface", "COMPLETED")
    assert [m["step"] for m in run.metrics("train/loss")] == [2, 4, 6]
    assert [m["step"] for m in run.metrics("eval/loss")] == [3, 6]
    assert {m["step"] for m in run.metrics("train/global_step")} == {2, 3, 4, 6}
    assert run.config["hidden_size"] == 16 and run.config["max_steps"] == 6
    assert "hf_do_not_store_me" not in repr(run.config)

    assert (remote["name"], remote["status"]) == ("by-name", "COMPLETED")
    assert remote["config"]["learning_rate"] == 1e-3 and remote["config"]["hub_token"] == "<HUB_TOKEN>"
    assert [p["step"] for p in remote_loss] == [2, 4, 6]
    assert [p["value"] for p in remote_loss] == [m["value"] for m in run.metrics("train/loss")]


@pytest.mark.slow
def test_torchrun_two_processes_make_one_run(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(PYTHON).parent))
    assert torchrun is not None
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node=2",
            str(PROGRAMS / "train_by_name.py"),
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = mlop.list_runs(tmp_path)
    assert run.status == "COMPLETED"
    assert run.meta["rank"] == {"rank": 0, "local_rank": 0, "world_size": 2}
    assert [m["step"] for m in run.metrics("train/loss")] == [2, 4, 6]
    assert [m["step"] for m in run.metrics("eval/loss")] == [3, 6]
    assert run.config["ddp_backend"] in (None, "gloo")


@pytest.mark.slow
def test_accelerate_under_torchrun_logs_from_the_main_process_only(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(PYTHON).parent))
    assert torchrun is not None
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node=2", str(PROGRAMS / "accelerate_by_name.py")],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = mlop.list_runs(tmp_path)
    assert (run.project, run.status, run.config) == ("accel-ddp", "COMPLETED", {"world_size": 2})
    assert [(m["step"], m["value"]) for m in run.metrics("rank")] == [(0, 0), (1, 0), (2, 0)]
    assert [m["value"] for m in run.metrics("loss")] == [1.0, 0.5, pytest.approx(1 / 3)]
