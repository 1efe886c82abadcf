"""mlop-compat as a package: the old ``mlop.compat`` paths, ``mlop import`` through the plugin hook, the
``.pth`` start-up hook, and mlop-core working (and saying what to install) without it."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import mlop
from mlop._plugins import get_plugin_manager
from mlop.cli import main

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "packages" / "mlop-compat"


def test_old_paths_are_the_new_modules() -> None:
    import mlop.compat.neptune as old_neptune
    import mlop.compat.wandb as old_wandb
    import mlop_compat
    import mlop_compat.neptune
    import mlop_compat.wandb
    from mlop.compat import UnsupportedError, UnsupportedFeatureError, log_at

    # The same module objects, not copies: wandb.run set through one path is seen through the other.
    assert old_wandb is mlop_compat.wandb
    assert old_neptune is mlop_compat.neptune
    assert mlop.compat.wandb is mlop_compat.wandb  # type: ignore[attr-defined]
    assert (UnsupportedError, UnsupportedFeatureError, log_at) == (
        mlop_compat.UnsupportedError,
        mlop_compat.UnsupportedFeatureError,
        mlop_compat.log_at,
    )


def test_a_run_through_the_old_path_is_the_new_paths_run(tmp_path: Path) -> None:
    import mlop.compat.wandb as wandb  # noqa: PLR0402  (the line users have)
    import mlop_compat.wandb

    run = wandb.init(project="p", dir=tmp_path, mode="offline")
    assert mlop_compat.wandb.run is run
    wandb.log({"loss": 0.5})
    run.finish()
    with mlop.open_run(next((tmp_path / ".mlop" / "p").iterdir())) as stored:
        assert [m["value"] for m in stored.metrics("loss")] == [0.5]


# Two ways to be without mlop-compat: a finder that says it is not installed, and a None entry in
# sys.modules (what Python does for a module that must not be imported).
_HIDE = {
    "finder": """
        import importlib.abc, sys
        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "mlop_compat" or name.startswith("mlop_compat."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, NotInstalled())
    """,
    "none-entry": """
        import sys
        sys.modules["mlop_compat"] = None
    """,
}

_WITHOUT = """
    import json, os, sys
    out = {}
    for statement in ("import mlop.compat.wandb as wandb", "import mlop.compat.neptune",
                      "from mlop.compat import UnsupportedError", "import mlop.compat; mlop.compat.log_at"):
        try:
            exec(statement)
            out[statement] = "imported"
        except ImportError as exc:
            out[statement] = f"{type(exc).__name__}: {exc}"
    import mlop
    run = mlop.init(project="p", dir=os.getcwd(), mode="offline")
    run.log({"x": 1.0})
    run.finish()
    out["status"] = run.status
    from mlop.cli import main
    try:
        main(["import", "tensorboard", "."])
    except SystemExit as exc:
        out["mlop import"] = exc.code
    out["modules"] = sorted(m for m, v in sys.modules.items() if m.startswith("mlop_compat") and v)
    print(json.dumps(out))
"""


@pytest.mark.parametrize("how", sorted(_HIDE))
def test_without_mlop_compat_the_old_paths_say_what_to_install(tmp_path: Path, how: str) -> None:
    code = textwrap.dedent(_HIDE[how]) + textwrap.dedent(_WITHOUT)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for statement in (
        "import mlop.compat.wandb as wandb",
        "import mlop.compat.neptune",
        "from mlop.compat import UnsupportedError",
        "import mlop.compat; mlop.compat.log_at",
    ):
        assert out[statement].startswith("ModuleNotFoundError: mlop.compat"), out[statement]
        assert out[statement].endswith("pip install mlop-compat"), out[statement]
    assert out["status"] == "COMPLETED"  # core itself works without the layers
    assert out["mlop import"] == 2  # argparse: no such command without the plugin that brings it
    assert out["modules"] == []


def test_mlop_import_comes_from_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlop_compat.plugin

    assert get_plugin_manager().get_plugin("compat") is mlop_compat.plugin
    # An empty folder: the command runs, finds nothing and says so (importing: test_tensorboard.py).
    assert main(["import", "tensorboard", str(tmp_path)]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().out

    # With autoload off and the plugin not named, the command is not there; named, it is.
    from mlop._plugins import reset_plugin_manager

    monkeypatch.setenv("MLOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    with pytest.raises(SystemExit) as exc:
        main(["import", "tensorboard", str(tmp_path)])
    assert exc.value.code == 2
    assert "invalid choice: 'import'" in capsys.readouterr().err
    monkeypatch.setenv("MLOP_PLUGINS", "compat")
    reset_plugin_manager()
    assert main(["import", "tensorboard", str(tmp_path)]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().out


def test_the_installed_pth_file_is_the_packaged_one() -> None:
    installed = Path(sysconfig.get_paths()["purelib"]) / "mlop_neptune_compat.pth"
    packaged = PACKAGE / "mlop_neptune_compat.pth"
    assert installed.read_text() == packaged.read_text()
    assert "mlop_compat._neptune_hook" in packaged.read_text()
    assert '"mlop_neptune_compat.pth" = "mlop_neptune_compat.pth"' in (PACKAGE / "pyproject.toml").read_text()
    assert "mlop_neptune_compat.pth" not in (ROOT / "packages" / "mlop-core" / "pyproject.toml").read_text()
    [line] = packaged.read_text().splitlines()
    assert line.startswith("import ")
    compile(line, str(packaged), "exec")


def test_metadata() -> None:
    import mlop_compat

    assert importlib.metadata.version("mlop-compat") == mlop_compat.__version__
    assert "mlop-core<0.2,>=0.1" in (importlib.metadata.requires("mlop-compat") or [])
    assert mlop_compat.__all__ == sorted(mlop_compat.__all__)
    assert (PACKAGE / "src" / "mlop_compat" / "py.typed").exists()
    eps = importlib.metadata.entry_points(group="mlop")
    assert {ep.value for ep in eps if ep.name == "compat"} == {"mlop_compat.plugin"}
