"""The deployment files in docs/deploy/ are valid and start a command the server accepts."""

from __future__ import annotations

import argparse
import configparser
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlop_server._cli import add_server_parser

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"


def _server_args(command: list[str]) -> argparse.Namespace:
    """``command`` (``.../mlop server OPTIONS``) parsed by the server's own parser; fails on a bad option."""
    assert Path(command[0]).name == "mlop" and command[1] == "server", command
    parser = argparse.ArgumentParser(prog="mlop server", exit_on_error=False)
    add_server_parser(parser)
    try:
        return parser.parse_args(command[2:])
    except (SystemExit, argparse.ArgumentError) as exc:  # some errors exit even with exit_on_error=False
        pytest.fail(f"the server refuses {shlex.join(command)}: {exc}")


def test_compose_file_is_yaml_and_runs_the_server_on_postgres() -> None:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"db", "mlop"}
    server = services["mlop"]
    args = _server_args(server["command"])
    assert args.workers > 1 and args.host == "0.0.0.0" and args.port == 3001
    url = server["environment"]["MLOP_SERVER_DB"]
    assert url.startswith("postgresql://") and ":" not in url.split("://")[1].split("@")[0]  # no password
    assert server["depends_on"]["db"]["condition"] == "service_healthy"
    assert "/ready" in " ".join(server["healthcheck"]["test"])
    assert services["db"]["image"].startswith("postgres:")
    assert f"{args.port}:{args.port}" in server["ports"][0]
    for service in services.values():  # secrets stay in the env_file, out of the compose file
        assert service["env_file"] == "./mlop.env"
        assert not [name for name in service.get("environment", {}) if "PASSWORD" in name or "KEY" in name]


def test_systemd_unit_starts_the_server_with_workers_and_no_secret_in_arguments() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "mlop-server.service").read_text())
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    args = _server_args(command)
    assert args.workers > 1 and args.admin_key is None
    assert service["Environment"].startswith("MLOP_SERVER_DB=postgresql://")
    assert "EnvironmentFile" in service and service["User"] != "root"
    assert service["ExecReload"].endswith("-HUP $MAINPID")


def test_proxy_snippets_point_at_the_served_port_and_check_readiness() -> None:
    caddy = (DEPLOY / "Caddyfile").read_text()
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "reverse_proxy 127.0.0.1:3001" in caddy and "health_uri /ready" in caddy
    assert "server 127.0.0.1:3001;" in nginx and "proxy_request_buffering off;" in nginx
    assert nginx.count("{") == nginx.count("}") and caddy.count("{") == caddy.count("}")
