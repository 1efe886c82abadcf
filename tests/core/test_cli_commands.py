"""``mlop runs``, ``mlop export``, usage errors, help texts, ``python -m mlop`` and init's keyword check,
each run as a user runs them: a real subprocess on runs made by the real client."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlop


def _run(*args: str, cwd: Path, module: str = "mlop") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mlop.Run]:
    """Three offline runs in two projects, made in order (a, b, c), one of them FAILED, one with an image."""
    root = tmp_path_factory.mktemp("cli-runs")
    made = {}
    for name, project in (("a", "vision"), ("b", "text"), ("c", "vision")):
        run = mlop.init(dir=root, project=project, name=name, mode="offline", config={"lr": 0.1})
        run.log({"train/loss": 1.0, "acc": 0.5})
        run.log({"train/loss": 0.25, "acc": 0.75})
        if name == "b":
            pytest.importorskip("PIL")
            import numpy as np

            run.log({"sample": mlop.Image(np.zeros((4, 4, 3), dtype=np.uint8), caption="zeros")})
            run.finish(1)
        else:
            run.finish()
        made[name] = run
        time.sleep(0.02)  # distinct creation times
    return made


def _root(runs: dict[str, mlop.Run]) -> Path:
    return runs["a"].dir.parents[2]


def test_runs_lists_newest_first_and_filters(runs: dict[str, mlop.Run]) -> None:
    root = _root(runs)
    table = _run("runs", "--dir", str(root), cwd=root)
    assert table.returncode == 0, table.stderr
    names = [line.split()[1] for line in table.stdout.splitlines()[1:]]
    assert names == ["c", "b", "a"]
    listed = json.loads(_run("runs", "--dir", str(root), "--json", cwd=root).stdout)
    assert [r["id"] for r in listed] == [runs["c"].id, runs["b"].id, runs["a"].id]
    assert listed[1]["status"] == "FAILED" and listed[1]["steps"] == 2
    vision = json.loads(_run("runs", "--dir", str(root), "--project", "vision", "--json", cwd=root).stdout)
    assert [r["name"] for r in vision] == ["c", "a"]
    failed = json.loads(_run("runs", "--dir", str(root), "--status", "failed", "--json", cwd=root).stdout)
    assert [r["name"] for r in failed] == ["b"]
    newest = json.loads(_run("runs", "--dir", str(root), "--limit", "1", "--json", cwd=root).stdout)
    assert [r["name"] for r in newest] == ["c"]
    none = _run("runs", "--dir", str(root), "--project", "nope", cwd=root)
    assert none.returncode == 0 and "no matching mlop runs" in none.stdout


def test_export_by_run_id_and_by_folder_with_positional_or_option_key(runs: dict[str, mlop.Run]) -> None:
    root = _root(runs)
    run = runs["a"]
    by_id = _run("export", run.id, "train/loss", "--dir", str(root), cwd=root)
    assert by_id.returncode == 0, by_id.stderr
    assert [(r["step"], r["value"]) for r in map(json.loads, by_id.stdout.splitlines())] == [
        (0, 1.0),
        (1, 0.25),
    ]
    by_folder = _run("export", str(run.dir), "--key", "train/loss", "--format", "json", cwd=root)
    assert [(r["step"], r["value"]) for r in json.loads(by_folder.stdout)] == [(0, 1.0), (1, 0.25)]
    # run from inside the folder that holds .mlop: the id alone is enough
    as_csv = _run("export", run.id, "acc", "--format", "csv", cwd=root)
    assert [(r["key"], r["step"], r["value"]) for r in csv.DictReader(io.StringIO(as_csv.stdout))] == [
        ("acc", "0", "0.5"),
        ("acc", "1", "0.75"),
    ]


def test_export_of_an_unknown_key_fails_and_names_the_keys(runs: dict[str, mlop.Run]) -> None:
    root = _root(runs)
    out = _run("export", runs["a"].id, "train/los", cwd=root)
    assert out.returncode == 1
    assert out.stdout == ""
    assert "no key 'train/los'" in out.stderr and "train/loss" in out.stderr and "acc" in out.stderr
    unknown_run = _run("export", "nosuchrun", "acc", cwd=root)
    assert unknown_run.returncode == 1 and "no run with that id" in unknown_run.stderr
    for folder in (root, runs["a"].dir.parent):  # .mlop, a project's folder: runs, not one run
        many = _run("export", str(folder), "acc", cwd=root)
        assert many.returncode == 1 and many.stdout == ""
        assert "is a folder of" in many.stderr and "give one run's folder" in many.stderr, many.stderr


def test_export_of_a_media_key_lists_its_files(runs: dict[str, mlop.Run]) -> None:
    root = _root(runs)
    out = _run("export", runs["b"].id, "sample", cwd=root)
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["key"] == "sample" and row["step"] == 2 and row["caption"] == "zeros"
    assert Path(row["value"]).is_file() and Path(row["value"]).is_relative_to(runs["b"].dir)


def test_a_bad_option_prints_the_subcommands_usage(tmp_path: Path) -> None:
    for argv, usage in (
        (["runs", "--bogus"], "usage: mlop runs"),
        (["export", "x", "--format", "xml"], "usage: mlop export"),
        (["runs", "--limit", "0"], "usage: mlop runs"),
        (["sync", "--nope"], "usage: mlop sync"),
        (["server", "keys", "list", "--nope"], "usage: mlop server keys list"),
    ):
        out = _run(*argv, cwd=tmp_path)
        assert out.returncode == 2, argv
        assert out.stderr.startswith(usage), (argv, out.stderr)


def test_every_subcommand_has_help_text(tmp_path: Path) -> None:
    from mlop.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    names = sorted(sub.choices)
    assert {"export", "runs", "login", "logout", "sync", "server", "ui"} <= set(names)
    overview = _run("--help", cwd=tmp_path).stdout
    for name in names:
        line = next(line for line in overview.splitlines() if line.split()[:1] == [name])
        assert len(line.split()) > 2, f"`mlop {name}` has no help line"
        own = _run(name, "--help", cwd=tmp_path)
        assert own.returncode == 0 and own.stdout.startswith(f"usage: mlop {name}")
        assert own.stdout.split("\n\n")[1].strip(), f"`mlop {name} --help` says nothing about it"


def test_python_dash_m_mlop_works_like_mlop(runs: dict[str, mlop.Run]) -> None:
    root = _root(runs)
    as_module = _run("runs", "--dir", str(root), "--json", cwd=root, module="mlop")
    as_cli = _run("runs", "--dir", str(root), "--json", cwd=root, module="mlop.cli")
    assert as_module.returncode == 0 and json.loads(as_module.stdout) == json.loads(as_cli.stdout)


def test_ui_on_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    out = _run("ui", "--dir", str(tmp_path / "missing"), "--no-browser", cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a folder" in out.stderr


def test_init_with_a_hyperparameter_keyword_suggests_config(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r'config=\{"lr": 0\.1\}'):
        mlop.init(dir=tmp_path, mode="offline", lr=0.1)
    with pytest.raises(mlop.ConfigError, match="did you mean 'project'"):  # a setting's typo: still named
        mlop.init(dir=tmp_path, mode="offline", projcet="x")
    assert not (tmp_path / ".mlop").exists()  # nothing was started
