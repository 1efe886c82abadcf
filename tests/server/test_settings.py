"""Per-project dashboard settings on a real server: kept across a restart, scoped by the key's owner."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mlop_server.testing import ServerProcess

PATH = "/api/projects/settings"


def new_key(server: ServerProcess, *args: str) -> str:
    out = server.cli("keys", "create", *args, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> Iterator[httpx.Client]:
    """A non-admin key of owner ``alice`` that may log runs in project ``shared`` only."""
    key = new_key(server, "--name", "alice", "--projects", "shared")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        yield http


def get(http: httpx.Client, project: str, name: str) -> httpx.Response:
    return http.get(PATH, params={"project": project, "name": name})


def put(http: httpx.Client, project: str, name: str, value: object) -> httpx.Response:
    data = json.dumps(value).encode()  # httpx sends no body for json=None; null forgets the setting
    return http.put(
        PATH,
        params={"project": project, "name": name},
        content=data,
        headers={"Content-Type": "application/json"},
    )


def test_a_setting_is_kept_per_project_and_survives_a_restart(
    server: ServerProcess, client: httpx.Client
) -> None:
    layout = {"groups": {"sys": {"collapsed": True}}, "order": ["val", "train"], "pinned": ["val/acc"]}
    assert get(client, "shared", "layout").json() == {
        "project": "shared",
        "name": "layout",
        "value": None,
        "scope": None,
    }
    answer = put(client, "shared", "layout", layout)
    assert answer.status_code == 200, answer.text
    assert answer.json()["value"] == layout and answer.json()["scope"] == "project"
    assert put(client, "other", "layout", ["x"]).status_code == 200
    assert put(client, "shared", "columns", {"shown": ["config/lr"]}).status_code == 200
    server.restart()
    with httpx.Client(base_url=server.url, headers=dict(client.headers), timeout=30) as again:
        assert get(again, "shared", "layout").json()["value"] == layout
        assert get(again, "other", "layout").json()["value"] == ["x"]
        assert get(again, "shared", "columns").json()["value"] == {"shown": ["config/lr"]}
        assert put(again, "other", "layout", None).json()["value"] is None  # null forgets it
        assert get(again, "other", "layout").json() == {
            "project": "other",
            "name": "layout",
            "value": None,
            "scope": None,
        }


def test_a_non_admin_key_changes_only_its_owners_view(
    server: ServerProcess, client: httpx.Client, alice: httpx.Client
) -> None:
    project_wide = {"groups": {"train": {"collapsed": False}}}
    assert put(client, "shared", "view", project_wide).status_code == 200
    # alice starts from the project's value, and her own write stays hers
    assert get(alice, "shared", "view").json()["value"] == project_wide
    mine = {"groups": {"train": {"collapsed": True}}}
    answer = put(alice, "shared", "view", mine)
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "owner"
    assert get(alice, "shared", "view").json()["value"] == mine
    assert get(client, "shared", "view").json()["value"] == project_wide
    # forgetting her value brings the project's back
    assert put(alice, "shared", "view", None).json() == {
        "project": "shared",
        "name": "view",
        "value": project_wide,
        "scope": "project",
    }
    # a project outside her key's projects is refused both ways
    assert get(alice, "secret", "view").status_code == 403
    assert put(alice, "secret", "view", {}).status_code == 403


def test_bad_settings_are_refused_and_lose_nothing(client: httpx.Client) -> None:
    assert put(client, "bad", "layout", {"keep": 1}).status_code == 200
    cases = [
        client.get(PATH, params={"name": "layout"}),
        client.get(PATH, params={"project": "bad"}),
        client.get(PATH, params={"project": "bad", "name": "no spaces"}),
        client.get(PATH, params={"project": "bad", "name": "x" * 65}),
        client.put(PATH, params={"project": "bad", "name": "layout"}, content=b"{not json"),
    ]
    for answer in cases:
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"]
    big = put(client, "bad", "layout", {"x": "y" * 70_000})
    assert big.status_code == 413, big.text
    assert "65536" in big.json()["message"]
    assert get(client, "bad", "layout").json()["value"] == {"keep": 1}
    anonymous = httpx.get(f"{client.base_url}{PATH}", params={"project": "bad", "name": "layout"})
    assert anonymous.status_code == 401
