"""Every error becomes application/problem+json (RFC 9457), mapped here and only here."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas.problem import PROBLEM_MEDIA_TYPE
from services import errors as domain

logger = logging.getLogger("app.errors")

PROBLEM_BASE = "/problems/"

_DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.Invalid: 422,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.TooManyAttempts: 429,
    domain.Unavailable: 503,
}

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    503: "service-unavailable",
}


def problem(
    status: int,
    slug: str,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        location = loc[0] if loc else "body"
        path = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
        out.append(
            {
                "field": ".".join(path) or location,
                "location": location,
                "message": str(err.get("msg", "invalid value")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(
            400, "malformed-json", "The request body is not valid JSON.", instance=request.url.path
        )
    return problem(
        422,
        "validation-error",
        "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        title="Your request is not valid.",
        field=errors[0]["field"] if errors else None,
        errors=errors,
        instance=request.url.path,
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    slug = _HTTP_SLUGS.get(exc.status_code, f"http-{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem(exc.status_code, slug, detail, headers=headers, instance=request.url.path)


async def _domain_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, domain.DomainError)
    status = next((code for cls, code in _DOMAIN_STATUS.items() if isinstance(exc, cls)), 400)
    headers: dict[str, str] = {}
    # A service may name a more precise problem type than its error class.
    slug = str(exc.extra.get("reason", exc.code))
    if isinstance(exc, domain.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, domain.TooManyAttempts | domain.Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    extra = {k: v for k, v in exc.extra.items() if k != "reason"}
    return problem(
        status,
        slug,
        exc.detail,
        headers=headers,
        field=exc.field,
        instance=request.url.path,
        **extra,
    )


# asyncpg's errors raised by the driver itself rather than sent by the server: the
# connection is closed, busy, or its protocol in a state it cannot go on from.
_DRIVER_REFUSALS = (asyncpg.InterfaceError, asyncpg.InternalClientError)


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    """Data the database refuses (SQLSTATE class 22: a NUL byte, an out-of-range number).

    Request models catch these first and name the field; this is the safety net
    that keeps such input from ever becoming a 500.
    """
    assert isinstance(exc, DBAPIError)
    if (
        exc.connection_invalidated
        or isinstance(exc, OperationalError | InterfaceError)
        # Under SQLAlchemy's adapter, the driver's own refusals (a connection whose
        # protocol a server restart left mid-operation, say) arrive as InternalError.
        or isinstance(getattr(exc.orig, "__cause__", None), _DRIVER_REFUSALS)
    ):
        return await _unavailable_handler(request, exc)
    state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    return await _by_sqlstate(request, exc, state)


async def _driver_handler(request: Request, exc: Exception) -> JSONResponse:
    """The same for the one-statement paths, which reach asyncpg without SQLAlchemy."""
    if isinstance(exc, _DRIVER_REFUSALS):
        return await _unavailable_handler(request, exc)
    assert isinstance(exc, asyncpg.PostgresError)
    return await _by_sqlstate(request, exc, str(exc.sqlstate or ""))


async def _by_sqlstate(request: Request, exc: Exception, state: str) -> JSONResponse:
    # 08 connection, 40 serialization failure or deadlock, 53 insufficient resources
    # (too many clients), 57 shutdown: transient, the same request may succeed again.
    if state[:2] in ("08", "40", "53", "57"):
        return await _unavailable_handler(request, exc)
    if state.startswith("22"):
        logger.warning("database refused a value", extra={"sqlstate": state})
        return problem(
            422,
            "invalid-value",
            "A value in the request cannot be stored.",
            instance=request.url.path,
        )
    return await _unhandled_handler(request, exc)


async def _unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached: a temporary condition, so 503 and a retry hint."""
    logger.warning("database unavailable", extra={"error": repr(exc)})
    return problem(
        503,
        "database-unavailable",
        "The database is not reachable; retry shortly.",
        headers={"Retry-After": "5"},
        instance=request.url.path,
    )


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "internal-error", "An unexpected error occurred; it has been logged.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(domain.DomainError, _domain_handler)
    app.add_exception_handler(DBAPIError, _database_handler)
    for driver_error in (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    ):
        app.add_exception_handler(driver_error, _driver_handler)
    app.add_exception_handler(OSError, _unavailable_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
