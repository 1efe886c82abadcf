"""Fixtures for mlop-server's tests: one real server process per module, and clients that talk to it.

Every test that uses ``server`` (or ``backend``, ``db_url``, ``fresh_db``) runs twice: on SQLite and on
PostgreSQL (a throwaway cluster for the session, a fresh database per module or per test; see
``tests/pgcluster.py``). The PostgreSQL runs are skipped, saying why, only where PostgreSQL is not installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

sys.path.append(str(Path(__file__).parents[1]))  # tests/pgcluster.py
from pgcluster import PgCluster, pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url"]

Api = Callable[..., httpx.Response]

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage the module's servers use: ``"sqlite"`` (under --data) or ``"postgres"`` (--db)."""
    name: str = request.param
    return name


def _database(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture(scope="module")
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The module's database: None on SQLite, a fresh PostgreSQL database's URL on PostgreSQL."""
    yield from _database(backend, request)


@pytest.fixture
def fresh_db(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database for one test: None on SQLite (the test's own --data), a fresh one on PostgreSQL."""
    yield from _database(backend, request)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    """A server shared by the tests of one module (once per backend)."""
    with ServerProcess(tmp_path_factory.mktemp("server"), db=db_url) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client with the admin key, based at the server's URL."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as http:
        yield http


def ndjson(*lines: dict[str, Any]) -> bytes:
    """NDJSON body of ``lines``."""
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


@pytest.fixture
def new_run(client: httpx.Client) -> Callable[..., int]:
    """Create a run (``new_run(project="p", **fields)``) and return its id."""

    def create(project: str = "tests", name: str = "run", **fields: Any) -> int:
        answer = client.post("/api/runs/create", json={"runName": name, "projectName": project, **fields})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["runId"])

    return create


@pytest.fixture
def ingest(client: httpx.Client) -> Api:
    """POST NDJSON lines to ``/ingest/<kind>`` of a run: ``ingest(run_id, "metrics", line, ...)``."""

    def post(
        run_id: int, kind: str, *lines: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return client.post(
            f"/ingest/{kind}",
            content=ndjson(*lines),
            headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id), **(headers or {})},
        )

    return post


def values(client: httpx.Client, run_id: int, key: str, **params: Any) -> list[dict[str, Any]]:
    """The points of a metric, via the read API."""
    answer = client.get(f"/api/runs/{run_id}/metrics", params={"key": key, **params})
    assert answer.status_code == 200, answer.text
    points: list[dict[str, Any]] = answer.json()
    return points


@pytest.fixture
def read_metric(client: httpx.Client) -> Callable[..., list[dict[str, Any]]]:
    """``read_metric(run_id, key, max_points=N)``: the points the read API answers."""
    return lambda run_id, key, **params: values(client, run_id, key, **params)
