"""The application factory."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from app import collector, errors, openapi
from app.api import (
    assessment,
    assessment_regions,
    attribution,
    auth,
    cooperatives,
    exits,
    exports,
    health,
    households,
    income,
    mpi,
    orders,
    products,
    regions,
    settlements,
    tracking,
    users,
    webhooks,
)
from app.cache import PageCache
from app.logging import configure_logging
from app.middleware import AccessMiddleware, BodySizeLimitMiddleware
from app.settings import Settings
from services.db import create_engine, session_factory
from services.exports import jobs as export_jobs
from services.jobs.service import Worker, load_handlers
from services.ledger import flags
from services.payments import jobs as payment_jobs
from services.payments.stripe import StripeConfig, StripeGateway
from services.tracking import polling
from services.tracking.aftership import AfterShip, AfterShipConfig
from services.tracking.kuaidi100 import Kuaidi100, Kuaidi100Config
from services.tracking.polling import PollPolicy, Providers
from services.tracking.vocabulary import Provider
from services.users.tokens import TokenReader

logger = logging.getLogger(__name__)

# Within the 10 s a container gets between SIGTERM and SIGKILL by default.
WORKER_STOP_SECONDS = 8

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

DESCRIPTION = """\
Marketplace for the produce of poor rural households, sold through their
cooperatives and household shops. Every sale is attributed, to the fen, to the
registered poor households who supplied it. Errors are RFC 9457 problem details.
"""


def stripe_gateway(settings: Settings) -> StripeGateway | None:
    """Stripe when both keys are set; without them cash on delivery still works."""
    if not (settings.stripe_secret_key and settings.stripe_webhook_secret):
        return None
    return StripeGateway(
        StripeConfig(
            api_key=settings.stripe_secret_key,
            webhook_secret=settings.stripe_webhook_secret,
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
        )
    )


def tracking_providers(settings: Settings) -> Providers:
    """Both tracking providers, each pushing and polling as far as its keys allow."""
    timeout = settings.tracking_timeout_seconds
    adapters: list[Provider] = [
        AfterShip(
            AfterShipConfig(
                api_key=settings.aftership_api_key,
                webhook_secret=settings.aftership_webhook_secret,
                api_base=settings.aftership_api_base,
                timeout_seconds=timeout,
            )
        ),
        Kuaidi100(
            Kuaidi100Config(
                customer=settings.kuaidi100_customer,
                key=settings.kuaidi100_key,
                salt=settings.kuaidi100_salt,
                api_base=settings.kuaidi100_api_base,
                timeout_seconds=timeout,
            )
        ),
    ]
    return Providers(
        by_name={a.name: a for a in adapters},
        policy=PollPolicy(
            interval=timedelta(minutes=settings.tracking_poll_minutes),
            rate=settings.tracking_poll_rate,
            expire_after=timedelta(days=settings.tracking_expire_days),
        ),
    )


@asynccontextmanager
async def in_process_worker(app: FastAPI) -> AsyncIterator[None]:
    """The background-job worker of the single-machine default, beside the API.

    Started on `app.state.sessionmaker` as the app starts, stopped before the
    engine is disposed. Jobs still running after WORKER_STOP_SECONDS are
    cancelled: they roll back and run again, elsewhere or later, after their lease.
    """
    settings: Settings = app.state.settings
    if not settings.run_worker_in_process:
        yield
        return
    worker = Worker(
        app.state.sessionmaker, load_handlers(), concurrency=settings.worker_concurrency
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="job-worker")
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, WORKER_STOP_SECONDS)
        except TimeoutError:
            logger.warning("in-process worker cancelled its jobs to stop in time")
        except Exception:
            # Shutting down regardless: the database must still be let go of.
            logger.exception("in-process worker failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything loaded by now stays for the life of the process (app.collector).
        with collector.tuned(collector.REQUESTS):
            async with in_process_worker(app):
                yield
        if app.state.stripe is not None:
            await app.state.stripe.aclose()
        await app.state.engine.dispose()

    app = FastAPI(
        title="Poverty-alleviation marketplace",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Nothing here configures OpenTelemetry; off, each request is spared FastAPI
        # asking the global providers (3% of a webhook's CPU in process).
        telemetry={
            "tracing": settings.otel_telemetry,
            "metrics": settings.otel_telemetry,
            "logs": settings.otel_telemetry,
        },
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
    app.state.stripe = stripe_gateway(settings)
    app.state.catalogue_cache = PageCache(settings.catalogue_cache_seconds)
    app.state.tokens = TokenReader(settings.signing_secret)
    # Background jobs of this process (refunds, intent cancellation) reach Stripe here.
    payment_jobs.use_gateway(app.state.stripe)
    app.state.tracking = tracking_providers(settings)
    polling.use_providers(app.state.tracking)
    # The flag rules follow recognition in this process (API or in-process worker);
    # loading the handlers registers them, and the payouts, as in a separate worker.
    flags.use_policy(attribution.policy_from(settings))
    # Export jobs of this process write where downloads read, with one pseudonym key.
    export_jobs.use_config(exports.export_config(settings))
    load_handlers()

    errors.install(app)
    openapi.install(app)
    # Routes are matched in this order, router by router: the busiest come first.
    for router in (
        webhooks.router,
        tracking.webhook_router,
        health.router,
        tracking.router,
        orders.router,
        products.router,
        auth.router,
        users.router,
        regions.router,
        cooperatives.router,
        households.router,
        income.router,
        attribution.router,
        settlements.router,
        assessment.router,
        assessment_regions.router,
        exits.router,
        mpi.router,
        exports.router,
    ):
        app.include_router(router)

    # With several worker processes, prometheus_client aggregates through files in
    # PROMETHEUS_MULTIPROC_DIR; otherwise each app keeps its own registry.
    registry = REGISTRY if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else CollectorRegistry()
    app.state.metrics_registry = registry

    # Added last, so outermost: every answer, even a 413, carries X-Request-ID.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessMiddleware, registry=registry, skip=frozenset({"/metrics"}))
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    return app
