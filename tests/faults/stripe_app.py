"""The app in-process on a committed database of its own, talking to a FakeStripe over HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from services.db import session_factory
from services.payments import jobs as payment_jobs
from services.payments.stripe import StripeConfig, StripeGateway
from tests.fakes.stripe_server import FakeStripe, FakeStripeServer
from tests.faults.helpers import Cast, app_settings, committed_database, seed
from tests.orders_helpers import WEBHOOK_SECRET, signed


@dataclass
class Live:
    app: FastAPI
    client: httpx.AsyncClient
    factory: async_sessionmaker[AsyncSession]
    cast: Cast
    fake: FakeStripe
    delivered: int = 0  # how many of the fake's events were sent to our webhook
    outcomes: Counter[str] = field(default_factory=Counter)

    async def use_library_retries(self, retries: int) -> None:
        """The same Stripe adapter, with the library retrying `retries` times in a call."""
        settings = self.app.state.settings
        gateway = StripeGateway(
            StripeConfig(
                api_key=settings.stripe_secret_key,
                webhook_secret=settings.stripe_webhook_secret,
                api_base=settings.stripe_api_base,
                timeout_seconds=settings.stripe_timeout_seconds,
                max_network_retries=retries,
            )
        )
        await self.app.state.stripe.aclose()
        self.app.state.stripe = gateway
        payment_jobs.use_gateway(gateway)

    def new_events(self) -> list[dict[str, Any]]:
        """What Stripe would have sent since last time, in order; marked as delivered."""
        events = list(self.fake.events)[self.delivered :]
        self.delivered += len(events)
        return events

    async def send(self, event: dict[str, Any]) -> httpx.Response:
        payload, headers = signed(event)
        return await self.client.post("/v1/webhooks/stripe", content=payload, headers=headers)

    async def deliver_new_events(self) -> None:
        """Send our webhook what Stripe would have sent since last time, each answered 200."""
        for event in self.new_events():
            answer = await self.send(event)
            assert answer.status_code == 200, (event["type"], answer.text)
            self.outcomes[answer.json()["outcome"]] += 1


@asynccontextmanager
async def live_app(
    server_url: str, stripe: FakeStripeServer, data_dir: Path, *, buyers: int, **settings: Any
) -> AsyncIterator[Live]:
    async with committed_database(server_url, "marketplace_stripe") as url:
        cast = await seed(url, cooperatives=2, stock=1_000, buyers=buyers)
        app = create_app(
            app_settings(
                url,
                data_dir,
                stripe_secret_key="sk_test_faults",
                stripe_webhook_secret=WEBHOOK_SECRET,
                stripe_api_base=stripe.url,
                log_level="ERROR",
                **settings,
            )
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://faults") as client:
                yield Live(app, client, session_factory(app.state.engine), cast, stripe.state)
        finally:
            await app.state.stripe.aclose()
            await app.state.engine.dispose()


def intent_of(order: dict[str, Any]) -> str:
    return str(order["client_secret"]).split("_secret_")[0]
