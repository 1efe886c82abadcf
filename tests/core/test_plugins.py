"""Plugin loading through real entry points, the environment switches, and rank handling."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlop
from mlop import _hooks
from mlop._plugins import get_plugin_manager, reset_plugin_manager

PLUGINS = {
    # A plugin that says this process is rank 1 of 2.
    "rankone": """
        import mlop

        @mlop.hookimpl
        def mlop_rank():
            return mlop.RankInfo(rank=1, local_rank=1, world_size=2)
    """,
    # A plugin whose own code is broken.
    "brokenplug": """
        raise RuntimeError("this plugin is broken")
    """,
    # A plugin for a framework that is not installed.
    "needsframework": """
        import framework_that_is_not_installed  # noqa: F401
    """,
    # A plugin that converts a type of its own into a number.
    "converter": """
        import mlop

        class Celsius:
            def __init__(self, degrees):
                self.degrees = degrees

        @mlop.hookimpl
        def mlop_convert(value):
            if isinstance(value, Celsius):
                return value.degrees + 273.15
            return None
    """,
    # A plugin for a toy framework: lifecycle, watch, graph and a CLI command.
    "toyframework": """
        import mlop

        EVENTS = []

        class ToyModel:
            def __init__(self):
                self.hooked = False

        class Handle:
            def __init__(self, model):
                self.model = model

            def remove(self):
                self.model.hooked = False
                EVENTS.append("removed")

        @mlop.hookimpl
        def mlop_run_started(run):
            EVENTS.append(("started", run.id))

        @mlop.hookimpl
        def mlop_run_finished(run, status):
            EVENTS.append(("finished", run.id, status))

        @mlop.hookimpl
        def mlop_graph(model):
            if isinstance(model, ToyModel):
                return {"format": "toy", "nodes": {".": {"type": "ToyModel", "depth": 0}}}
            return None

        @mlop.hookimpl
        def mlop_watch(run, model, log, log_freq, log_graph, bins):
            if not isinstance(model, ToyModel):
                return None
            model.hooked = True
            EVENTS.append(("watch", log, log_freq, log_graph, bins))
            if log_graph:
                run.log_graph(mlop_graph(model))
            return Handle(model)

        @mlop.hookimpl
        def mlop_add_commands(subparsers):
            toy = subparsers.add_parser("toy", help="say hello")
            toy.add_argument("--name", default="world")
            toy.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)
    """,
}


@pytest.fixture
def plugin_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Install the plugins above as a real distribution with entry points in the group ``mlop``."""
    site = tmp_path / "site"
    site.mkdir()
    for name, source in PLUGINS.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    dist = site / "mlop_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlop-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mlop]\n" + "".join(f"{name} = {name}\n" for name in PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    reset_plugin_manager()
    yield site
    for name in PLUGINS:
        sys.modules.pop(name, None)


def test_a_broken_plugin_is_skipped_and_named_a_missing_framework_quietly(
    plugin_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mlop.plugins"):
        pm = get_plugin_manager()
    assert pm.has_plugin("converter") and pm.has_plugin("rankone")
    assert not pm.has_plugin("brokenplug") and not pm.has_plugin("needsframework")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "'brokenplug'" in warnings[0] and "this plugin is broken" in warnings[0]
    quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("needsframework" in m and "framework_that_is_not_installed" in m for m in quiet)


def test_rank_from_a_plugin_gives_a_run_that_does_nothing(plugin_env: Path, tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, project="p")
    run.log({"a": 1})
    mlop.log({"b": 1})
    run.finish()
    assert not (tmp_path / ".mlop").exists()


def test_convert_hook_turns_foreign_values_into_numbers(plugin_env: Path, tmp_path: Path) -> None:
    import converter  # type: ignore[import-not-found]

    assert _hooks.convert(converter.Celsius(0)) == 273.15
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.setenv("MLOP_PLUGINS", "converter")
        reset_plugin_manager()
        run = mlop.init(dir=tmp_path)
        run.log({"temp": converter.Celsius(10)})
        run.finish()
    (row,) = mlop.open_run(run.dir).metrics()
    assert row["key"] == "temp" and row["value"] == pytest.approx(283.15)


def test_autoload_off_loads_only_the_named_plugins(plugin_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    assert not get_plugin_manager().has_plugin("rankone")
    assert _hooks.rank() == mlop.RankInfo(0, 0, 1)
    monkeypatch.setenv("MLOP_PLUGINS", "rankone")
    reset_plugin_manager()
    pm = get_plugin_manager()
    assert pm.has_plugin("rankone") and not pm.has_plugin("converter")
    assert _hooks.rank().rank == 1


def test_trace_switch_logs_every_hook_call(
    plugin_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLOP_TRACE_PLUGINS", "1")
    reset_plugin_manager()
    with caplog.at_level(logging.DEBUG, logger="mlop.plugins"):
        _hooks.rank()
    assert any("mlop_rank" in r.getMessage() for r in caplog.records)


def test_environment_rank_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert _hooks.rank() == mlop.RankInfo(rank=1, local_rank=1, world_size=4)
    run = mlop.init(dir=tmp_path)
    run.log({"a": 1})
    run.add_tags("x")
    run.finish()
    assert not (tmp_path / ".mlop").exists()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "0")
    zero = mlop.init(dir=tmp_path)
    zero.finish()
    assert mlop.open_run(zero.dir).meta["rank"] == {"rank": 0, "local_rank": 1, "world_size": 4}


def test_watch_without_an_integration_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    run = mlop.init(dir=tmp_path)
    with pytest.raises(mlop.PluginError, match="mlop-torch"):
        run.watch(object())
    run.finish()


def test_lifecycle_watch_and_graph_hooks_of_an_integration(
    plugin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")  # without rankone, which would make us rank 1
    monkeypatch.setenv("MLOP_PLUGINS", "toyframework")
    import toyframework  # type: ignore[import-not-found]

    from mlop import _hooks

    model = toyframework.ToyModel()
    assert _hooks.graph(model) == {"format": "toy", "nodes": {".": {"type": "ToyModel", "depth": 0}}}
    assert _hooks.graph(object()) is None
    run = mlop.init(dir=tmp_path)
    run.watch(model, log="all", freq=10, bins=32)
    assert model.hooked
    run.finish()
    assert not model.hooked  # finish removes every watch
    assert toyframework.EVENTS == [
        ("started", run.id),
        ("watch", "all", 10, True, 32),
        "removed",
        ("finished", run.id, "COMPLETED"),
    ]
    assert mlop.open_run(run.dir).graph == {"format": "toy", "nodes": {".": {"type": "ToyModel", "depth": 0}}}


def test_a_plugin_adds_cli_commands(plugin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlop.cli import main

    assert main(["toy", "--name", "mlop"]) == 0
    assert capsys.readouterr().out.strip() == "hello mlop"
