"""The ASGI application: a thin adapter from HTTP to the framework-free endpoints.

Endpoint logic (and its database and Argon2 work) runs in the thread pool, so one slow login never
stalls the event loop; errors are answered as ``chit.answers`` says, which the handlers only render.
The database work that does run on the loop (SQLite client lookup, audit commit) never waits for a
lock there: a lock held by another process must not freeze JWKS, discovery and every other request.
It moves to a thread, whose wait is bounded (``db_lock_timeout_ms``); past that, 503 + Retry-After.

Prometheus metrics (``chit.server.metrics``) are served at ``/metrics``; the request-duration middleware
wraps everything, so that a request refused for its size counts too.
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Scope

from chit.answers import Answer, answer_to
from chit.core.paths import (
    DISCOVERY_PATHS,
    INTROSPECTION_PATH,
    JWKS_PATH,
    OPENID_CONFIGURATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
)
from chit.errors import AuditWriteError, ChitError, DatabaseBusyError, InvalidRequestError, OAuth2Error
from chit.server.admin.api import admin_router
from chit.server.admin.auth import audit_refusal
from chit.server.audit import request_id_from
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.server.credentials import warm_up
from chit.server.endpoints.introspection import IntrospectionEndpoint
from chit.server.endpoints.metadata import server_metadata
from chit.server.endpoints.revocation import RevocationEndpoint
from chit.server.endpoints.revocation_feed import add_feed_routes
from chit.server.endpoints.service_keys import SERVICE_KEYS_PATH, service_keys
from chit.server.endpoints.token import TokenEndpoint, TokenOutcome
from chit.server.limits import SizeLimitMiddleware
from chit.server.metrics import METRICS_PATH, RequestDurationMiddleware, metrics
from chit.server.token_route import TokenReply, TokenRequestHead, TokenRoute

log = logging.getLogger("chit.server")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
GRANT_THREADS = 4
LOGIN_THREADS = 8
LOCK_WAIT_THREADS = 16  # requests waiting in threads for a lock another process holds; more get 503 at once


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _answer(answer: Answer) -> JSONResponse:
    return _json(answer.body(), answer.status, answer.headers)


async def _oauth2_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuth2Error)
    return _answer(answer_to(exc))


async def _chit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChitError)
    answer = answer_to(exc)
    if not (isinstance(exc, AuditWriteError) and exc.retry_after is not None):  # the audit log waits for a lock
        await audit_refusal(request, answer.status, answer.error, str(exc), exc)
    return _answer(answer)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()[:10]]
    answer = answer_to(InvalidRequestError("; ".join(problems)))
    await audit_refusal(request, answer.status, answer.error, answer.description)
    return _answer(answer)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error = "not_found" if exc.status_code == 404 else "invalid_request"
    await audit_refusal(request, exc.status_code, error, str(exc.detail))
    return _json(
        {"error": error, "error_description": str(exc.detail).lower()}, exc.status_code, dict(exc.headers or {})
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %r", request.method, request.url.path, exc_info=exc)  # %r: one line
    # an admin request that failed this way leaves a trace too; the cause is for the log, not the audit
    await audit_refusal(request, 500, "server_error", f"unexpected {type(exc).__name__}; see the server log")
    return _json({"error": "server_error"}, 500)


async def _token_error(scope: Scope, exc: Exception) -> Response:
    """What the app's exception handlers answer for ``exc``, for the token route ahead of the app."""
    request = Request(scope)
    if isinstance(exc, OAuth2Error):
        return await _oauth2_error(request, exc)
    if isinstance(exc, ChitError):
        return await _chit_error(request, exc)
    return await _server_error(request, exc)


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(settings: Settings, server: AuthServer | None = None) -> ASGIApp:
    server = server or AuthServer(settings)
    warm_up()
    if settings.redis_url is not None:
        server.feed.relay()  # from now on, whatever any process commits reaches Redis
    token_endpoint = TokenEndpoint(server)
    introspection = IntrospectionEndpoint(server)
    revocation = RevocationEndpoint(server)
    app = FastAPI(
        title="chit auth server",
        version="0.1.0",
        exception_handlers={
            OAuth2Error: _oauth2_error,
            ChitError: _chit_error,
            RequestValidationError: _validation_error,
            StarletteHTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.auth_server = server
    # Few threads for the grants: each holds the GIL for its CPU work, so more only add hand-offs.
    grant_threads = anyio.CapacityLimiter(GRANT_THREADS)
    inline_reads = server.store.engine.dialect.name == "sqlite"
    server.store.limit_lock_waits(settings.db_lock_timeout_ms)  # a request answers 503 rather than hang
    lock_wait_threads = anyio.CapacityLimiter(LOCK_WAIT_THREADS)
    login_threads = anyio.CapacityLimiter(LOGIN_THREADS)

    async def wait_for_database(issue: functools.partial[TokenOutcome]) -> TokenOutcome:
        """Another process holds the SQLite lock: wait for it in a thread, bounded, or answer 503 now
        when enough requests wait already (each waiting thread would only lengthen the queue)."""
        if lock_wait_threads.available_tokens < 1:
            raise DatabaseBusyError()
        return await anyio.to_thread.run_sync(issue, limiter=lock_wait_threads)

    async def answer_token(body: bytes, head: TokenRequestHead) -> TokenReply:
        params, grant_type = token_endpoint.parse(body, head.content_type)
        request_id = request_id_from(head.request_id)
        issue = functools.partial(
            token_endpoint.issue,
            params,
            grant_type,
            authorization=head.authorization,
            source=head.source,
            request_id=request_id,
        )
        if grant_type == "password":  # Argon2: its own threads, so that logins never hold up the cheap grants
            outcome = await anyio.to_thread.run_sync(issue, limiter=login_threads)
        elif inline_reads and token_endpoint.runs_inline(grant_type, params):
            # a few lookups in an embedded SQLite file cost less than handing the work to a thread; the
            # grants that write (refresh, creating a deferred delegation, API keys) stay off the loop
            try:
                outcome = issue()  # never waits for a lock on the loop (Store): busy, it tells at once
            except DatabaseBusyError:
                outcome = await wait_for_database(issue)
        else:
            outcome = await anyio.to_thread.run_sync(issue, limiter=grant_threads)
        await server.audit.record_async(*outcome.events)
        return TokenReply(outcome.result(), request_id)

    @app.post(TOKEN_PATH, tags=["oauth2"], summary="Token endpoint (RFC 6749 §3.2)")
    async def token(request: Request) -> Response:
        """Answered by ``TokenRoute`` before FastAPI routes anything; here for the API docs, and for an
        app mounted under another path."""
        headers = request.headers
        head = TokenRequestHead(
            headers.get("content-type"), headers.get("authorization"), headers.get("x-request-id"), _source(request)
        )
        reply = await answer_token(await request.body(), head)
        return Response(
            reply.body, headers={**NO_STORE, "X-Request-ID": reply.request_id}, media_type="application/json"
        )

    @app.post(INTROSPECTION_PATH, tags=["oauth2"], summary="Token introspection (RFC 7662)")
    async def introspect(request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(
            introspection.handle,
            body,
            content_type=request.headers.get("content-type"),
            authorization=request.headers.get("authorization"),
        )
        return _json(answer)

    @app.post(REVOCATION_PATH, tags=["oauth2"], summary="Token revocation (RFC 7009)")
    async def revoke(request: Request) -> Response:
        body = await request.body()
        request_id = request_id_from(request.headers.get("x-request-id"))
        await run_in_threadpool(
            revocation.handle,
            body,
            content_type=request.headers.get("content-type"),
            authorization=request.headers.get("authorization"),
            source=_source(request),
            request_id=request_id,
        )
        return Response(status_code=200, headers={**NO_STORE, "X-Request-ID": request_id})

    async def metadata() -> Response:
        return JSONResponse(server_metadata(server, token_endpoint), headers={"Cache-Control": "max-age=300"})

    for path in DISCOVERY_PATHS:
        app.add_api_route(path, metadata, methods=["GET"], tags=["discovery"], summary="RFC 8414 metadata")

    @app.get(JWKS_PATH, tags=["discovery"], summary="JSON Web Key Set (RFC 7517)")
    async def jwks() -> Response:
        body = server.keys().ring.jwks(server.now_datetime())
        return JSONResponse(body, headers={"Cache-Control": f"public, max-age={settings.jwks_max_age}"})

    @app.get(SERVICE_KEYS_PATH, tags=["discovery"], summary="Services' public keys (chit: service_keys_uri)")
    async def published_service_keys() -> Response:
        body = await run_in_threadpool(service_keys, server)  # a database read: off the event loop
        return JSONResponse(body, headers={"Cache-Control": f"public, max-age={settings.jwks_max_age}"})

    app.include_router(admin_router())
    add_feed_routes(app, server)

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # public, like most Prometheus exporters: counts and durations, never a client, user or token
    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def index() -> dict[str, str]:
        """Where to go from here: discovery (RFC 8414) and the API docs, at the configured issuer."""
        from chit import __version__

        issuer = server.settings.issuer
        return {
            "name": "chit",
            "version": __version__,
            "issuer": issuer,
            "discovery": issuer + OPENID_CONFIGURATION_PATH,
            "docs": issuer + (app.docs_url or "/docs"),
        }

    return RequestDurationMiddleware(SizeLimitMiddleware(TokenRoute(app, answer_token, _token_error)))


def create_app_from_env() -> ASGIApp:
    """The factory each uvicorn worker process calls (settings arrive in the environment)."""
    app = create_app(Settings.from_env())
    # what is built by now lives as long as the process: out of the collector's way, so that its full
    # collections, which otherwise walk every module, key and table object again, stay short
    gc.collect()
    gc.freeze()
    return app
