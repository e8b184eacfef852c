"""The application factory."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from app import errors, openapi
from app.api import auth, cooperatives, health, households, products, regions, users
from app.logging import configure_logging
from app.middleware import AccessLogMiddleware, BodySizeLimitMiddleware
from app.settings import Settings
from services.db import create_engine, session_factory

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

DESCRIPTION = """\
Marketplace for the produce of poor rural households, sold through their
cooperatives and household shops. Every sale is attributed, to the fen, to the
registered poor households who supplied it. Errors are RFC 9457 problem details.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.engine.dispose()

    app = FastAPI(
        title="Poverty-alleviation marketplace",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.database_url is None:
        raise RuntimeError("No database: set DATABASE_URL or start through `marketplace serve`.")
    app.state.engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    app.state.sessionmaker = session_factory(app.state.engine)

    errors.install(app)
    openapi.install(app)
    for router in (
        health.router,
        auth.router,
        users.router,
        regions.router,
        cooperatives.router,
        households.router,
        products.router,
    ):
        app.include_router(router)

    # With several worker processes, prometheus_client aggregates through files in
    # PROMETHEUS_MULTIPROC_DIR; otherwise each app keeps its own registry.
    registry = REGISTRY if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else CollectorRegistry()
    Instrumentator(
        excluded_handlers=["/metrics"], should_group_status_codes=False, registry=registry
    ).instrument(app).expose(app, include_in_schema=False)

    # Added last, so outermost: every answer, even a 413, carries X-Request-ID.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    return app
