"""`marketplace worker` with a lease of a few seconds, for the test that kills a worker mid-job.

A job whose worker dies is claimed again once its lease has run out. The CLI
leases for the Worker's default five minutes and has no option for it, so the
test runs this instead: the CLI's setup (app/cli.py `_work`) with `--lease`.
`--export-batch-rows` and `--export-progress-every` make export jobs read so
many rows at a time and report progress every so many rows (with the CLI's 2,000
and 10,000, the first report, where the export test holds the job, would need
that many households).

    python -m tests.faults.worker_process --lease 3 --concurrency 4

Configured from the environment like the CLI (DATABASE_URL, MARKETPLACE_*).
SIGTERM lets the jobs in flight finish.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import replace
from datetime import timedelta

from app.api.exports import export_config
from app.logging import configure_logging
from app.main import stripe_gateway, tracking_providers
from app.settings import Settings
from services.db import create_engine, session_factory
from services.exports.jobs import use_config
from services.jobs.service import Worker, load_handlers
from services.payments.jobs import use_gateway
from services.tracking.polling import use_providers


async def work(
    lease: timedelta, concurrency: int, *, batch_rows: int | None, progress_every: int | None
) -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    assert settings.database_url, "set DATABASE_URL"
    engine = create_engine(settings.database_url)
    gateway = stripe_gateway(settings)
    use_gateway(gateway)
    use_providers(tracking_providers(settings))
    exports = export_config(settings)
    use_config(
        replace(
            exports,
            batch_rows=batch_rows or exports.batch_rows,
            progress_every=progress_every or exports.progress_every,
        )
    )
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
    parser.add_argument("--export-batch-rows", type=int, help="rows an export reads at a time")
    parser.add_argument("--export-progress-every", type=int, help="rows between progress reports")
    args = parser.parse_args()
    asyncio.run(
        work(
            timedelta(seconds=args.lease),
            args.concurrency,
            batch_rows=args.export_batch_rows,
            progress_every=args.export_progress_every,
        )
    )


if __name__ == "__main__":
    main()
