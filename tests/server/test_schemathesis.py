"""The server's OpenAPI document, fuzzed by schemathesis against a real server: no 5xx, no answer that
breaks the document (status codes, content types, headers, schemas).

The two checks that compare what the server accepts with what the schemas allow are left out: the server
is stricter than JSON Schema can say (``config`` must be JSON text of an object, a histogram's ``bins``
must match its ``freq``...) and ignores what it does not read (an ``X-Run-Id`` on a route without one).

The suite runs a fixed, small budget per route (``MLOP_SCHEMATHESIS_EXAMPLES``, 8 by default);
``make fuzz`` runs the long hunt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from mlop_server._openapi import openapi_document
from mlop_server.testing import ServerProcess

EXAMPLES = int(os.environ.get("MLOP_SCHEMATHESIS_EXAMPLES", "8"))


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """An NDJSON body: the generated line (or lines, for a list) one per line."""
    lines = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)  # integers of any size


schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    # schemathesis sends wrong keys on purpose, and checks they get 401: a budget that lasts the run
    args = ["--failed-key-burst", "100000"]
    with ServerProcess(tmp_path_factory.mktemp("schemathesis"), extra_args=args, db=db_url) as proc:
        yield proc


@pytest.fixture(scope="module")
def run_id(server: ServerProcess) -> int:
    import httpx

    answer = httpx.post(
        f"{server.url}/api/runs/create",
        json={"runName": "st", "projectName": "st"},
        headers={"Authorization": f"Bearer {server.key}"},
    )
    return int(answer.json()["runId"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_document_holds(case: Any, server: ServerProcess, run_id: int) -> None:
    if case.headers is None:
        case.headers = {}
    case.headers.setdefault("X-Run-Id", str(run_id))
    case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.key}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
        timeout=30,
    )
