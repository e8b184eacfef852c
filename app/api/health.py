"""Liveness and readiness for orchestrators and load balancers; metrics for Prometheus."""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import problem
from app.schemas.problem import problem_responses
from services.schema import head_revision

router = APIRouter(tags=["ops"])
logger = logging.getLogger(__name__)

_HEAD = head_revision()


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    revision: str | None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving; says nothing about its dependencies."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready when the database answers and its schema is at the head revision."""
    try:
        async with asyncio.timeout(2), request.app.state.sessionmaker() as session:
            revision = (
                await session.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        logger.warning("readiness: database unreachable", extra={"error": repr(exc)})
        return problem(
            503,
            "database-unavailable",
            "The database is not reachable.",
            headers={"Retry-After": "5"},
        )
    if revision != _HEAD:
        return problem(
            503,
            "migrations-pending",
            f"The database is at revision {revision}, the code expects {_HEAD}.",
            headers={"Retry-After": "5"},
        )
    return Readiness(status="ready", database="ok", revision=revision)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process, or of every worker process when
    PROMETHEUS_MULTIPROC_DIR is set (each worker then writes its samples there)."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
