"""The ASGI application: routes, the lifespan that runs the writer and the reaper, and JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mlop_server._accesslog import Observer, access_logger
from mlop_server._backend import open_storage
from mlop_server._config import ServerConfig
from mlop_server._dashboard import dashboard_routes
from mlop_server._files import open_file_store
from mlop_server._http import Context, guarded, json_response
from mlop_server._openapi import openapi_document
from mlop_server._prom import Metrics, prom_routes
from mlop_server._readapi import read_routes
from mlop_server._routes import protocol_routes
from mlop_server._settings import settings_routes
from mlop_server._storage import Storage

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

IDEMPOTENCY_DAYS = 7


async def _reaper(ctx: Context) -> None:
    """Every ``reap_interval`` seconds: fail silent RUNNING runs, forget old idempotency answers."""
    config = ctx.config
    while True:
        await asyncio.sleep(config.reap_interval)
        now = int(time.time() * 1000)
        try:
            if not await ctx.storage.lead():
                continue  # another process sharing the database does it
            reaped = await ctx.storage.reap(now - int(config.heartbeat_timeout * 1000))
            if reaped:
                logger.info("marked %d silent run(s) FAILED: %s", len(reaped), reaped)
            await ctx.storage.prune(now - IDEMPOTENCY_DAYS * 86_400_000)
        except Exception:  # broad: the reaper must outlive one failed pass (a busy database, say)
            logger.exception("the reaper pass failed; trying again later")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "Error")
    headers = dict(exc.headers) if exc.headers else None  # 405 names the methods allowed (Allow)
    return json_response({"error": kind, "message": str(exc.detail)}, exc.status_code, headers)


def create_app(config: ServerConfig, storage: Storage | None = None) -> Starlette:
    """The server as an ASGI app.

    Args:
        config: The settings.
        storage: The storage backend; by default the one ``config.db`` names (SQLite in ``config.data_dir``
            without it).

    Returns:
        A Starlette app whose lifespan starts the storage writer and the reaper and closes them.
    """
    store = (
        storage
        if storage is not None
        else open_storage(config.db, config.data_dir, max_pending=config.max_pending_writes)
    )
    ctx = Context(
        config=config,
        storage=store,
        files=open_file_store(config.files, config.data_dir),
        secret=store.signing_secret(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.start()
        reaper = asyncio.create_task(_reaper(ctx), name="mlop-server-reaper")
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await store.aclose()
            store.close()
            ctx.files.close()

    routes: list[BaseRoute] = [
        *protocol_routes(ctx),
        *read_routes(ctx),
        *dashboard_routes(ctx),
        *settings_routes(ctx),
    ]

    async def openapi(request: Request) -> Response:
        ctx.authenticate(request)
        return json_response(openapi_document())

    routes.append(Route("/openapi.json", guarded(openapi), methods=["GET"]))
    metrics = Metrics()
    routes.extend(prom_routes(ctx, metrics))
    observe = Middleware(Observer, metrics=metrics, storage=store, log=access_logger(config.access_log))
    return Starlette(
        routes=routes,
        middleware=[observe],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
