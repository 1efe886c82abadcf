"""Fuzzing ``run.log()`` online against a real mlop-server: any Unicode key (lone surrogates and keys over
512 characters among them), any number (huge ints, NaN, infinities, bools), any text, nested dicts, and
values that cannot be logged. No exception reaches the caller, and every value mlop accepts reads back
exactly from the local store and from the server."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlop

pytestmark = pytest.mark.slow

# Keys without "/" (nesting joins with "/", so two generated keys never flatten to the same one).
_ANY_CHAR = st.characters(blacklist_categories=(), blacklist_characters="/")  # surrogates included
KEYS = st.one_of(
    st.text(_ANY_CHAR, max_size=12),
    st.text(st.characters(blacklist_characters="/"), max_size=12),
    st.text(alphabet="ab", min_size=505, max_size=520),  # around the server's 512-character limit
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([10**308, -(10**309), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
LEAVES = st.one_of(
    NUMBERS, st.text(_ANY_CHAR, max_size=40), st.none(), st.lists(st.integers(), max_size=3), st.binary()
)
PAYLOADS = st.dictionaries(KEYS, st.one_of(LEAVES, st.dictionaries(KEYS, LEAVES, max_size=3)), max_size=6)

_MAX_INT = int(1.7976931348623157e308)


def _valid_key(key: str) -> bool:
    """What the issue says a server refuses: empty, over 512 characters, or not valid Unicode."""
    if not key or len(key) > 512:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


Seen = dict[tuple[str, int], Any]


def _expect(prefix: str, data: dict[str, Any], step: int, metrics: Seen, texts: Seen) -> None:
    """What the documented rules keep of one logged payload (see the module docstring)."""
    for key, value in data.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            _expect(name, value, step, metrics, texts)
            continue
        if not _valid_key(name):
            continue
        if isinstance(value, bool):
            metrics[(name, step)] = int(value)
        elif isinstance(value, int):
            if -_MAX_INT <= value <= _MAX_INT:
                metrics[(name, step)] = value
        elif isinstance(value, float):
            metrics[(name, step)] = value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                continue
            texts[(name, step)] = value


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(want) and got == want


def _wire(value: float) -> Any:
    """A number as the server's read API answers it: float64, non-finite ones as the protocol's strings."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def test_log_fuzzed_values_and_keys_online(online: Any, tmp_path: Path) -> None:
    run = mlop.init(
        project="fuzz",
        dir=tmp_path,
        host=online.server.url,
        api_key=online.server.key,
        disable_system_metrics=True,
        disable_console=True,
        x_finish_timeout=60,
    )
    metrics: dict[tuple[str, int], Any] = {}
    texts: Seen = {}
    steps = itertools.count()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(PAYLOADS)
    def log_one(data: dict[str, Any]) -> None:
        step = next(steps)
        run.log({f"e{step}": data}, step=step)  # never raises: a raise fails the example here
        _expect(f"e{step}", data, step, metrics, texts)

    log_one()
    run.finish()
    assert run.status == "COMPLETED"
    assert metrics and texts  # the strategies did produce values to check

    with mlop.open_run(run.dir) as stored:
        local = {(m["key"], m["step"]): m["value"] for m in stored.metrics(system=False)}
        local_texts = {(d["key"], d["step"]): d["value"] for d in stored.data()}
    assert local.keys() == metrics.keys()
    wrong = {k: (local[k], v) for k, v in metrics.items() if not _same(local[k], v)}
    assert not wrong
    assert local_texts == texts

    (server_run,) = online.api.get("/api/runs", params={"project": "fuzz"}).json()
    run_id = server_run["id"]
    names = {k["name"]: k["type"] for k in online.api.get(f"/api/runs/{run_id}/keys").json()}
    assert {k for k, _s in metrics} == {n for n, t in names.items() if t == "METRIC"}
    for (key, step), value in metrics.items():
        points = online.api.get(f"/api/runs/{run_id}/metrics", params={"key": key}).json()
        assert [(p["step"], p["value"]) for p in points] == [(step, _wire(value))], key
    for (key, step), text in texts.items():
        rows = online.api.get(f"/api/runs/{run_id}/data", params={"key": key}).json()
        assert [(r["step"], r["data"]) for r in rows] == [(step, text)], key
    assert online.api.get(f"/api/runs/{run_id}").json()["status"] == "COMPLETED"
