"""`marketplace worker` with a lease of a few seconds, for the test that kills a worker mid-job.

A job whose worker dies is claimed again once its lease has run out. The CLI
leases for the Worker's default five minutes and has no option for it, so the
test runs this instead: the CLI's setup (app/cli.py `_work`) with `--lease`.

    python -m tests.faults.worker_process --lease 3 --concurrency 4

Configured from the environment like the CLI (DATABASE_URL, MARKETPLACE_*).
SIGTERM lets the jobs in flight finish.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta

from app.logging import configure_logging
from app.main import stripe_gateway, tracking_providers
from app.settings import Settings
from services.db import create_engine, session_factory
from services.jobs.service import Worker, load_handlers
from services.payments.jobs import use_gateway
from services.tracking.polling import use_providers


async def work(lease: timedelta, concurrency: int) -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    assert settings.database_url, "set DATABASE_URL"
    engine = create_engine(settings.database_url)
    gateway = stripe_gateway(settings)
    use_gateway(gateway)
    use_providers(tracking_providers(settings))
    worker = Worker(session_factory(engine), load_handlers(), concurrency=concurrency, lease=lease)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await worker.run(stop)
    finally:
        if gateway is not None:
            await gateway.aclose()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lease", type=float, required=True, help="lease, in seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(work(timedelta(seconds=args.lease), args.concurrency))


if __name__ == "__main__":
    main()
