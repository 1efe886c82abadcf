"""A fuzz pass over the OpenAPI document: requests built from each route's schema never get a 5xx."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlop_server._openapi import openapi_document
from mlop_server.testing import ServerProcess

DOC = openapi_document()


def dumps(value: Any) -> bytes:
    """JSON bytes; unlike orjson, integers of any size."""
    return json.dumps(value).encode()


EXAMPLES = int(os.environ.get("MLOP_FUZZ_EXAMPLES", "12"))  # per route; raise it for a longer hunt
TOKEN = string.ascii_letters + string.digits + "-_."
OPERATIONS = [(method, path) for path, ops in DOC["paths"].items() for method in ops]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that mostly follow ``schema`` (the subset of JSON Schema the document uses)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not props:
            return st.dictionaries(st.text(max_size=12), json_values, max_size=3)
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in props.items() if k in required},
            optional={k: from_schema(v) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=2**63 - 1) | st.integers()
    if kind == "number":
        return st.floats(allow_nan=False) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.text(max_size=30)
    return json_values


def broken(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with one field dropped, replaced by anything, or an unknown field added."""
    if not isinstance(value, dict) or not value:
        return json_values
    keys = sorted(value)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {n: v for n, v in value.items() if n != k}),
        st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**value, kv[0]: kv[1]}),
        json_values.map(lambda v: {**value, "unknownField": v}),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("fuzz"), db=db_url) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
def run_id(http: httpx.Client) -> int:
    value: int = http.post("/api/runs/create", json={"runName": "fuzz", "projectName": "fuzz"}).json()[
        "runId"
    ]
    return value


def test_served_document_is_the_packaged_one(http: httpx.Client) -> None:
    assert http.get("/openapi.json").json() == DOC


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_5xx(http: httpx.Client, run_id: int, method: str, path: str, backend: str) -> None:
    op = DOC["paths"][path][method]
    content = op.get("requestBody", {}).get("content", {})
    media, spec = next(iter(content.items())) if content else ("application/json", {})
    schema = spec.get("schema", {})
    ndjson = media == "application/x-ndjson"
    valid = st.lists(from_schema(schema), min_size=1, max_size=5) if ndjson else from_schema(schema)
    bodies = st.one_of(
        valid.map(lambda v: b"".join(dumps(x) + b"\n" for x in v) if ndjson else dumps(v)),
        from_schema(schema).flatmap(broken).map(dumps),
        st.binary(max_size=64),
        json_values.map(dumps),
    )
    params = {p["name"]: p for p in op.get("parameters", [])}
    query = st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(st.integers(-5, 10**6).map(str), st.text(max_size=10))
            for name, p in params.items()
            if p["in"] == "query"
        },
    )
    run_ids = st.sampled_from([run_id, run_id, 10**9]) | st.integers(0, 10**30)
    header_run = st.one_of(st.just(str(run_id)), st.text(TOKEN, max_size=5), st.just("None"))

    # the routes' parsing is the same on both backends: PostgreSQL gets a third of the budget (CI time)
    budget = EXAMPLES if backend == "sqlite" else max(1, EXAMPLES // 3)

    @settings(max_examples=budget, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        body=bodies,
        query=query,
        rid=run_ids,
        header_run=header_run,
        authed=st.booleans(),
        idem=st.text(TOKEN, max_size=8),
    )
    def fuzz(body: bytes, query: dict[str, str], rid: int, header_run: str, authed: bool, idem: str) -> None:
        url = path.replace("{runId}", str(rid)).replace("{fileId}", str(rid if rid > 10**9 else 1))
        headers = {"X-Run-Id": header_run, "Content-Type": media}
        if idem:
            headers["Idempotency-Key"] = idem
        if not authed:
            headers["Authorization"] = "Bearer mlps_fuzz"
        answer = http.request(
            method.upper(), url, params=query, content=body if content else None, headers=headers
        )
        assert answer.status_code < 500, (method, url, body, answer.text)
        if answer.status_code >= 400:
            assert set(answer.json()) == {"error", "message"}

    fuzz()
    assert http.get("/health").status_code == 200
