"""The protocol routes of ``protocol.md``: run control, ingest, files, heartbeat, alert, and the uploads."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlop._headers import decode_header_value
from mlop_server import _protocol
from mlop_server._errors import BadRequest, Conflict, TooLarge, TooMany, Unauthorized
from mlop_server._http import (
    Context,
    Handler,
    body,
    content_length,
    guarded,
    json_response,
    path_id,
    stream,
)
from mlop_server._keys import sign_upload, verify_upload
from mlop_server._metrics import parse_metrics
from mlop_server._ops import CreateRun, Op

__all__ = ["protocol_routes"]

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY: Final = 200
PARSE_IN_THREAD_BYTES: Final = 4 * 1024 * 1024


def _header_run_id(request: Request) -> int:
    raw = request.headers.get("x-run-id", "")
    if not raw.isdigit() or int(raw) < 1 or len(raw) > 18:
        raise BadRequest("header X-Run-Id must hold the run id (a positive integer)")
    return int(raw)


def _idempotency(request: Request, run_id: int | None, owner: str) -> tuple[str, str] | None:
    """The ``(scope, key)`` of an ``Idempotency-Key``: per route, run and owner, so that one owner's key
    never replays another owner's answer."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"header Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return (f"{request.url.path}:{run_id or ''}:{owner}", key)


def _named_by_header(request: Request, op: Op) -> Op:
    """A create whose body leaves ``runName`` empty takes the name from ``X-Run-Name``.

    The body is the authority; the header is decoded first (a name HTTP cannot carry as it is travels
    percent-encoded after ``UTF-8''``, see ``mlop/_headers.py``). A header that decodes to no usable name is
    ignored, as the header is only a hint.
    """
    if not isinstance(op, CreateRun) or op.name:
        return op
    name = decode_header_value(request.headers.get("x-run-name", "")).strip()
    if not name or len(name) > _protocol.MAX_NAME or not name.isprintable() or name.startswith("UTF-8''"):
        return op
    return dataclasses.replace(op, name=name)


def _op_run_id(op: Op) -> int | None:
    run_id = getattr(op, "run_id", None)
    return run_id if isinstance(run_id, int) else None


def protocol_routes(ctx: Context) -> list[Route]:
    """The routes of the protocol, bound to ``ctx``."""

    def run_answer(request: Request, answer: dict[str, Any]) -> dict[str, Any]:
        run = answer["run"]
        return {
            "runId": run["id"],
            "number": run["number"],
            "displayId": run["displayId"],
            "projectName": run["project"],
            "organizationSlug": ctx.config.org,
            # the run's page in the dashboard (a browser opens it; the read API's URL would answer 401)
            "url": f"{ctx.base_url(request)}/ui/#/run/{run['id']}",
            "resumed": answer["resumed"],
            # Not in the stock protocol: the run's highest step, so that a resume goes on after it.
            "lastStep": answer.get("lastStep"),
        }

    def api(parse: Callable[[bytes], Op]) -> Handler:
        """A run-control route: check the key, parse the body, apply it once."""

        async def handler(request: Request) -> Response:
            key = ctx.authenticate(request)
            data = await body(request, ctx.config)
            if len(data) > PARSE_IN_THREAD_BYTES:  # keep the event loop answering while a huge body parses
                op = await anyio.to_thread.run_sync(parse, data)
            else:
                op = parse(data)
            op = _named_by_header(request, op)
            answer = await ctx.storage.apply(op, _idempotency(request, _op_run_id(op), key.owner), key)
            if "run" in answer:
                return json_response(run_answer(request, answer))
            return json_response(answer)

        return handler

    def ingest(parse: Callable[[bytes, int], Op]) -> Handler:
        """An NDJSON route: the run comes from ``X-Run-Id``; the batch applies whole, once."""

        async def handler(request: Request) -> Response:
            key = ctx.authenticate(request)
            run_id = _header_run_id(request)
            data = await body(request, ctx.config)
            if len(data) > PARSE_IN_THREAD_BYTES:  # keep the event loop answering while a huge batch parses
                op = await anyio.to_thread.run_sync(parse, data, run_id)
            else:
                op = parse(data, run_id)
            answer = await ctx.storage.apply(op, _idempotency(request, run_id, key.owner), key)
            # for the metrics (``_accesslog.Observer``): values, data rows or console lines acknowledged
            request.scope["mlop.stored"] = getattr(op, "count", None) or len(getattr(op, "rows", ()))
            return json_response(answer)

        return handler

    async def slug(request: Request) -> Response:
        ctx.authenticate(request)
        _protocol.parse_slug(await body(request, ctx.config))
        return json_response({"organization": {"slug": ctx.config.org}})

    async def trigger(request: Request) -> Response:
        key = ctx.authenticate(request)
        run_id = _protocol.parse_trigger(await body(request, ctx.config))
        status = await ctx.storage.heartbeat(run_id, key)
        return json_response({"status": status, "triggers": []})

    async def files(request: Request) -> Response:
        key = ctx.authenticate(request)
        run_id = _header_run_id(request)
        op = _protocol.parse_files(await body(request, ctx.config), run_id, key.id, ctx.config.max_file_size)
        answer = await ctx.storage.apply(op, _idempotency(request, run_id, key.owner), key)
        expires = int(time.time()) + ctx.config.upload_ttl
        base = ctx.base_url(request)
        out: dict[str, list[dict[str, str]]] = {}
        sizes = {(f.log_name, f.name): f.size for f in op.files}
        for log_name, file_name, file_id in answer["files"]:
            url = ctx.files.upload_url(file_id, sizes[(log_name, file_name)], ctx.config.upload_ttl)
            if url is None:  # the bytes come through this server's upload route
                signature = sign_upload(ctx.secret, file_id, run_id, key.id, file_name, expires)
                query = urlencode({"run": run_id, "expires": expires, "signature": signature})
                url = f"{base}/uploads/{file_id}?{query}"
            out.setdefault(log_name, []).append({file_name: url})
        return json_response(out)

    async def upload(request: Request) -> Response:
        if ctx.uploads >= ctx.config.max_uploads:
            raise TooMany(f"more than {ctx.config.max_uploads} uploads at once; retry later")
        ctx.uploads += 1
        try:
            return await _upload(request)
        finally:
            ctx.uploads -= 1

    async def _upload(request: Request) -> Response:
        file_id = path_id(request, "file_id")
        query = request.query_params
        try:
            run_id, expires = int(query["run"]), int(query["expires"])
            signature = query["signature"]
        except (KeyError, ValueError):
            raise Unauthorized("the upload URL is incomplete") from None
        row = await ctx.storage.get_file(file_id)
        if row is None or row.run_id != run_id:
            raise Unauthorized("the upload URL is not valid")
        if not verify_upload(ctx.secret, signature, file_id, run_id, row.key_id, row.name, expires):
            raise Unauthorized("the upload URL's signature is not valid")
        if expires < time.time():
            raise Unauthorized("the upload URL has expired")
        key = ctx.storage.get_key(row.key_id)
        if key is None or not key.active:
            raise Unauthorized("the key that asked for this upload was revoked")
        if row.uploaded:
            raise Conflict("this file was uploaded already")
        length = content_length(request)
        if length is not None and length > row.size:
            raise TooLarge(f"the upload is larger than the {row.size} bytes announced")
        chunks = stream(request, ctx.config.body_timeout, ctx.config.upload_min_rate)
        await ctx.files.write(file_id, chunks, row.size)
        await ctx.storage.file_uploaded(file_id, row.size)
        return json_response({"success": True})

    return [
        Route("/api/slug", guarded(slug), methods=["POST"]),
        Route("/api/runs/create", guarded(api(_protocol.parse_create)), methods=["POST"]),
        Route("/api/runs/resume", guarded(api(_protocol.parse_resume)), methods=["POST"]),
        Route("/api/runs/status/update", guarded(api(_protocol.parse_status)), methods=["POST"]),
        Route("/api/runs/logName/add", guarded(api(_protocol.parse_log_names)), methods=["POST"]),
        Route("/api/runs/tags/update", guarded(api(_protocol.parse_tags)), methods=["POST"]),
        Route("/api/runs/config/update", guarded(api(_protocol.parse_config_update)), methods=["POST"]),
        Route("/api/runs/modelGraph/create", guarded(api(_protocol.parse_graph)), methods=["POST"]),
        Route("/api/runs/alert", guarded(api(_protocol.parse_alert)), methods=["POST"]),
        Route("/api/runs/trigger", guarded(trigger), methods=["POST"]),
        Route("/ingest/metrics", guarded(ingest(parse_metrics)), methods=["POST"]),
        Route("/ingest/data", guarded(ingest(_protocol.parse_data)), methods=["POST"]),
        Route("/ingest/logs", guarded(ingest(_protocol.parse_logs)), methods=["POST"]),
        Route("/files", guarded(files), methods=["POST"]),
        Route("/uploads/{file_id:int}", guarded(upload), methods=["PUT"]),
    ]
