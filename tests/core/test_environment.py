"""The run's environment (``systemMetadata``): what is in it, and that no secret ever is."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mlop
from mlop._system._redact import REDACTED, Redactor

TOKEN = "mlps_thisIsTheSecretKey0123456789"
OTHER = "hunter2-very-secret-password"


def _system(run: Any) -> dict[str, Any]:
    reader = mlop.open_run(run.dir)
    try:
        assert reader.system == reader.system_metadata
        return reader.system
    finally:
        reader.close()


def test_the_environment_describes_python_packages_machine_and_start(tmp_path: Path) -> None:
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0)
    run.finish()
    system = _system(run)
    import numpy
    import psutil

    assert system["python"]["version"] == platform.python_version()
    assert system["packages"]["numpy"] == numpy.__version__
    assert system["packages"]["mlop-core"] == mlop.__version__
    assert "pytest" not in system["packages"]  # frameworks only, not every distribution
    assert system["hostname"] == socket.gethostname()
    assert system["platform"]["system"] == platform.system()
    assert system["cpu"]["virtual"] == psutil.cpu_count()
    assert system["memory"]["virt"] == psutil.virtual_memory().total
    assert system["process"]["pid"] == os.getpid()
    assert system["process"]["cmdline"][0] == sys.executable
    created = mlop.open_run(run.dir).created_at
    assert created is not None and abs(system["start_time"] - created * 1000) < 60_000
    assert "env" not in system  # environment variables are off by default
    assert "diff" not in system.get("git", {})


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_branch_dirty_flag_and_a_remote_without_credentials(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    _git(repo, "remote", "add", "origin", f"https://oauth2:{TOKEN}@git.example.com/team/model.git")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    commit = _git(repo, "rev-parse", "HEAD")
    os.chdir(repo)

    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0)
    run.finish()
    git = _system(run)["git"]
    assert (git["commit"], git["branch"], git["dirty"]) == (commit, "trunk", False)
    assert git["remote"] == "https://git.example.com/team/model.git"

    (repo / "train.py").write_text(f"print('v2')\nAPI_KEY = '{TOKEN}'\n")
    run = mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0, capture_git_diff=True)
    run.finish()
    git = _system(run)["git"]
    assert git["dirty"] is True
    assert "+print('v2')" in git["diff"]
    assert TOKEN not in git["diff"] and REDACTED in git["diff"]


def test_outside_a_git_checkout_there_is_no_git_entry(tmp_path: Path) -> None:
    if _git_root(tmp_path) is not None:
        pytest.skip("the temporary folder lies inside a git checkout")
    script = tmp_path / "train.py"  # neither the working directory nor the script is in a checkout
    script.write_text(
        f"import mlop\nmlop.init(dir={str(tmp_path)!r}, mode='offline', x_sys_sampling_interval=0).finish()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    [reader] = mlop.list_runs(tmp_path)
    assert reader.system["hostname"] == socket.gethostname()
    assert "git" not in reader.system


def _git_root(path: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_a_token_on_the_command_line_and_in_the_environment_is_never_stored(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import mlop
            run = mlop.init(dir={str(tmp_path)!r}, mode="offline", x_sys_sampling_interval=0,
                            capture_env_vars=True)
            print("connecting with", {TOKEN!r})
            print("password=" + {OTHER!r})
            run.finish()
            """
        )
    )
    env = {
        **os.environ,
        "MLOP_API_TOKEN": TOKEN,
        "DB_PASSWORD": OTHER,
        "MY_SERVICE_SECRET": "s3cr3t-value-abc",
        "HARMLESS": "visible-value",
    }
    env.pop("MLOP_MODE", None)
    argv = [sys.executable, str(script), "--api-key", TOKEN, f"--db-password={OTHER}", "--max-tokens", "512"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [reader] = mlop.list_runs(tmp_path)
    system = reader.system
    stored = json.dumps(system) + json.dumps(list(reader.logs()))
    for secret in (TOKEN, OTHER, "s3cr3t-value-abc"):
        assert secret not in stored
    assert system["process"]["cmdline"][2:] == [
        "--api-key",
        REDACTED,
        f"--db-password={REDACTED}",
        "--max-tokens",
        "512",
    ]
    assert system["env"]["MLOP_API_TOKEN"] == REDACTED
    assert system["env"]["DB_PASSWORD"] == REDACTED
    assert system["env"]["HARMLESS"] == "visible-value"
    messages = [line["message"] for line in reader.logs()]
    assert messages == [f"connecting with {REDACTED}", f"password={REDACTED}"]
    # The user's own terminal still shows what the script printed.
    assert TOKEN in done.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefghijklmnop", f"Authorization: Bearer {REDACTED}"),
        ("push to https://user:pa55word@host.example/x", f"push to https://{REDACTED}@host.example/x"),
        ("hf token hf_abcdefghijklmnopqrstuvwxyz1234", f"hf token {REDACTED}"),
        ('{"api_key": "abc123xyz"}', f'{{"api_key": "{REDACTED}"}}'),
        ("num_tokens=512 tokenizer=bpe keypoints=17", "num_tokens=512 tokenizer=bpe keypoints=17"),
    ],
)
def test_redaction_of_free_text(text: str, expected: str) -> None:
    assert Redactor(environ={}).text(text) == expected


def test_redaction_of_command_lines() -> None:
    redactor = Redactor(environ={"WANDB_API_KEY": "value-from-the-environment"})
    argv = [
        "train.py",
        "--hf-token",
        "abc123456",
        "--token=abc123456",
        "db.password=abc123456",
        "+trainer.api_key=abc123456",
        "--PASSWORD",
        "abc123456",
        "--max-tokens",
        "512",
        "--keypoints",
        "17",
        "--url",
        "https://user:pw@example.com/data",
        "--note",
        "value-from-the-environment",
        "mlpi_abcdefghijklmnop",
    ]
    assert redactor.argv(argv) == [
        "train.py",
        "--hf-token",
        REDACTED,
        f"--token={REDACTED}",
        f"db.password={REDACTED}",
        f"+trainer.api_key={REDACTED}",
        "--PASSWORD",
        REDACTED,
        "--max-tokens",
        "512",
        "--keypoints",
        "17",
        "--url",
        f"https://{REDACTED}@example.com/data",
        "--note",
        REDACTED,
        REDACTED,
    ]


def test_package_versions_come_from_the_first_installation_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlop._system._environment import packages

    site = tmp_path / "site"
    for name in ("Scikit_Learn-1.5.0.dist-info", "torch-9.0.0.dist-info", "requests-2.0.dist-info"):
        (site / name).mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    found = packages()
    assert found["scikit-learn"] == "1.5.0"
    assert found["torch"] == "9.0.0"  # shadows the installed torch, as it would for imports
    assert "requests" not in found  # not an ML framework
    assert list(found) == sorted(found)


def test_secret_names_by_pattern_and_the_names_that_stay_readable() -> None:
    from mlop._system._redact import is_secret_name

    secret = [
        "SLACK_WEBHOOK_URL", "MLOP_URL_WEBHOOK", "GPG_PASSPHRASE", "PRIVATE_PEM", "SENTRY_DSN", "MYSQL_PWD",
        "PGPASSWORD", "AWS_SESSION_TOKEN", "SESSION_COOKIE", "GOOGLE_APPLICATION_CREDENTIALS", "DB_PASS",
        "OAUTH_CLIENT_SECRET", "HF_TOKEN", "--db-pass", "--webhook", "accessToken", "AccountKey",
        "basic_auth",
    ]  # fmt: skip
    readable = [
        "PWD", "OLDPWD", "GIT_AUTHOR_NAME", "TOKENIZERS_PARALLELISM", "max_tokens", "--keypoints", "passed",
        "PASSTHROUGH", "--num-passes",
    ]  # fmt: skip
    assert [name for name in secret if not is_secret_name(name)] == []
    assert [name for name in readable if is_secret_name(name)] == []


def test_a_pem_block_is_hidden_line_by_line_even_with_other_lines_between() -> None:
    lines = Redactor(environ={"DESKTOP_SESSION": "ubuntu"}).lines()
    stream = [
        "loading key",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB",
        "epoch 1 loss: 0.25",  # stderr, between the block's lines
        "aN+0ZBXfiQgc3X2cJ5rwMoXr4wTnQzVb8vxcJmVZgJpDK6hKqmh0LhQ==",
        "-----END RSA PRIVATE KEY----- done",
        "running on ubuntu",
        "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn",  # after the block: not hidden by shape
    ]
    assert [lines(line) for line in stream] == [
        "loading key",
        REDACTED,
        REDACTED,
        "epoch 1 loss: 0.25",
        REDACTED,
        REDACTED + " done",
        "running on ubuntu",
        "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn",
    ]


def test_argv_options_and_urls_with_secrets() -> None:
    redactor = Redactor(environ={})
    argv = ["--db-pass", "hunter2!", "--webhook=https://hooks.example.com/x", "--dsn", "https://k@s.io/1"]
    assert redactor.argv(argv) == ["--db-pass", REDACTED, f"--webhook={REDACTED}", "--dsn", REDACTED]
    assert redactor.text("postgresql://u:p@ss/w0rd@db.internal/x") == f"postgresql://{REDACTED}@db.internal/x"
    assert redactor.text("GPG_PASSPHRASE='correct horse battery'") == f"GPG_PASSPHRASE='{REDACTED}'"
