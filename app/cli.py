"""The `marketplace` command: serve, worker, migrate, demo, create-admin, ledger-*, openapi."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app import collector
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from services.demo.load import DemoSummary
    from services.ledger.audit import Difference


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a live database: DATABASE_URL, or the embedded server."""
    if settings.database_url:
        yield settings
        return
    from app.embedded import embedded_postgres

    with embedded_postgres(settings.data_dir) as url:
        yield settings.model_copy(update={"database_url": url})


async def _migrate(url: str) -> None:
    from services.db import create_engine
    from services.schema import upgrade

    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@click.group()
def main() -> None:
    """Marketplace linking poor rural households to buyers."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="API processes, each on its own SO_REUSEPORT socket (default: MARKETPLACE_WORKERS, 1).",
)
@click.option("--demo", is_flag=True, help="Load the demo dataset before serving.")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Start the API; with no DATABASE_URL, on the embedded PostgreSQL."""
    import uvicorn

    from app.logging import configure_logging

    base = Settings()
    configure_logging(base.log_level)
    # uvicorn re-raises SIGTERM once it has shut down; turning it into SystemExit
    # lets the embedded database stop cleanly instead of the process dying at once.
    signal.signal(signal.SIGTERM, _exit_quietly)
    with database(base) as settings, contextlib.suppress(KeyboardInterrupt):
        assert settings.database_url
        asyncio.run(_migrate(settings.database_url))
        if demo:
            _load_demo(settings)
        host = host or settings.host
        port = port or settings.port
        workers = workers or settings.workers
        if workers > 1:
            status = _serve_workers(settings.database_url, host, port, workers)
            if status:
                sys.exit(status)
            return
        from app.main import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, proxy_headers=True)


def _serve_workers(database_url: str, host: str, port: int, workers: int) -> int:
    """Several API processes under a supervisor; they read their settings from the environment."""
    import os
    import tempfile

    from app.serving import Supervisor, Target

    # The workers are new interpreters: they find the (possibly embedded) database here.
    os.environ["DATABASE_URL"] = database_url
    with contextlib.ExitStack() as stack:
        metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics:
            # Counts left by an earlier run's processes would be added to this one's.
            for stale in Path(metrics).glob("*.db"):
                stale.unlink()
        else:
            metrics = stack.enter_context(tempfile.TemporaryDirectory(prefix="prometheus-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
        target = Target("app.main:create_app", factory=True)
        return Supervisor(target, host, port, workers).run()


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs run at the same time (default: MARKETPLACE_WORKER_CONCURRENCY, 4).",
)
def worker(concurrency: int | None) -> None:
    """Run background jobs until SIGTERM or Ctrl-C (embedded PostgreSQL without DATABASE_URL).

    The first signal lets the jobs in flight finish; a second one cancels them
    (they roll back and run again after their lease).
    """
    from app.logging import configure_logging

    base = Settings()
    configure_logging(base.log_level)
    # Until the worker's own handlers are installed, SIGTERM still stops the
    # embedded database cleanly (as with `serve`).
    signal.signal(signal.SIGTERM, _exit_quietly)
    with database(base) as settings, contextlib.suppress(KeyboardInterrupt):
        assert settings.database_url
        asyncio.run(_work(settings, concurrency or settings.worker_concurrency))


async def _work(settings: Settings, concurrency: int) -> None:
    from services.db import create_engine, session_factory
    from services.jobs.service import Worker, load_handlers
    from services.schema import upgrade

    assert settings.database_url
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    from app.api.attribution import policy_from
    from app.api.exports import export_config
    from app.main import stripe_gateway, tracking_providers
    from services.exports.jobs import use_config
    from services.ledger import flags
    from services.payments.jobs import use_gateway
    from services.tracking.polling import use_providers

    gateway = stripe_gateway(settings)
    use_gateway(gateway)
    use_providers(tracking_providers(settings))
    flags.use_policy(policy_from(settings))
    use_config(export_config(settings))
    try:
        await upgrade(engine)
        job_worker = Worker(session_factory(engine), load_handlers(), concurrency=concurrency)
        stop = asyncio.Event()
        running = asyncio.create_task(job_worker.run(stop))

        def on_signal() -> None:
            if stop.is_set():
                running.cancel()
            stop.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        # Tuned as the API processes are, whose in-process worker this one replaces.
        with collector.tuned(collector.REQUESTS), contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        if gateway is not None:
            await gateway.aclose()
        await engine.dispose()


@main.command()
def migrate() -> None:
    """Apply every pending migration."""
    with database(Settings()) as settings:
        assert settings.database_url
        asyncio.run(_migrate(settings.database_url))
    click.echo("database is at head")


@main.command()
def demo() -> None:
    """Load the demo dataset (a fictional county); does nothing if it is there already."""
    with database(Settings()) as settings:
        assert settings.database_url
        asyncio.run(_migrate(settings.database_url))
        _load_demo(settings)


@main.command("create-admin")
@click.option("--email", required=True)
@click.option("--password", required=True)
def create_admin(email: str, password: str) -> None:
    """Create a platform admin account (the first one, typically)."""
    from services.db import create_engine, session_factory, transaction
    from services.errors import DomainError
    from services.schema import upgrade
    from services.users.models import Role
    from services.users.service import NewStaff, create_staff

    async def run(url: str) -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            async with transaction(session_factory(engine)) as session:
                await create_staff(
                    session, NewStaff(email=email, password=password, role=Role.admin)
                )
        finally:
            await engine.dispose()

    if len(password) < 8:
        raise click.BadParameter("at least 8 characters", param_hint="--password")
    with database(Settings()) as settings:
        assert settings.database_url
        try:
            asyncio.run(run(settings.database_url))
        except DomainError as exc:
            raise click.ClickException(exc.detail) from exc
    click.echo(f"admin {email} created")


@main.command("ledger-recognise")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    # Each batch reads its cooperatives' members and insiders again, whatever its size:
    # 20,000 against 10,000 measured 9% more lines/s and a fifth less CPU, at about 350
    # MB of memory instead of 260.
    default=20_000,
    show_default=True,
    help="Fulfilments recognised per transaction.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=32),
    default=2,
    show_default=True,
    help="Batches recognised at once, each on a connection of its own.",
)
def ledger_recognise(batch_size: int, workers: int) -> None:
    """Work off the recognition backlog: delivered, paid fulfilments not yet in the ledger.

    Each batch is its own transaction; the workers (and any other process
    recognising at the same time) share the backlog through SKIP LOCKED. Stops
    when no batch finds anything left. Then records the payouts of any recognised
    fulfilment that has none.
    """
    with database(Settings()) as settings:
        assert settings.database_url
        asyncio.run(_recognise_backlog(settings, batch_size, workers))


async def _recognise_backlog(settings: Settings, batch_size: int, workers: int) -> None:
    from app.api.attribution import policy_from
    from services.db import create_engine, session_factory, transaction
    from services.jobs.service import load_handlers
    from services.ledger import flags, payouts
    from services.ledger import service as ledger
    from services.schema import upgrade

    assert settings.database_url
    # What follows recognition (flag rules, payouts) registers on import, as in a worker.
    load_handlers()
    flags.use_policy(policy_from(settings))
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        factory = session_factory(engine)
        total, started = 0, time.monotonic()

        async def work() -> None:
            # One batch's SQL runs while another's rules run here: both cores stay busy.
            nonlocal total
            while True:
                async with transaction(factory) as session:
                    lines = await ledger.recognise_due(
                        session, now=datetime.now(UTC), limit=batch_size
                    )
                # The batch's rows are garbage now: whatever cycles they left go with them.
                gc.collect()
                if not lines:
                    return
                total += lines
                rate = total / max(time.monotonic() - started, 1e-9)
                click.echo(f"recognised {lines} lines ({total} in all, {rate:,.0f} lines/s)")

        # The batches' rows would keep the garbage collector busy: it collects once a
        # batch instead (app.collector).
        with collector.tuned(collector.BATCHES):
            await asyncio.gather(*(work() for _ in range(workers)))
        backfilled = 0
        while True:
            async with transaction(factory) as session:
                written = await payouts.backfill_payouts(session)
            if not written:
                break
            backfilled += written
        elapsed = time.monotonic() - started
        click.echo(
            f"backlog done: {total} lines in {elapsed:.1f} s"
            f" ({total / max(elapsed, 1e-9):,.0f} lines/s), {backfilled} missing payouts recorded"
        )
    finally:
        await engine.dispose()


@main.command("ledger-audit")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON Lines: one object per difference, then one with the summary.",
)
@click.option(
    "--grace-minutes",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="A delivered, paid fulfilment is reported unrecognised after this long.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5_000,
    show_default=True,
    help="Order lines read and compared at a time.",
)
def ledger_audit(as_json: bool, grace_minutes: int, batch_size: int) -> None:
    """Recompute what the ledger should hold from orders, refunds and share snapshots,
    and compare with what it holds. Exits 1 when there is any difference, else 0."""
    with database(Settings()) as settings:
        assert settings.database_url
        clean = asyncio.run(
            _audit_database(
                settings.database_url,
                as_json=as_json,
                grace=timedelta(minutes=grace_minutes),
                batch_size=batch_size,
            )
        )
    if not clean:
        sys.exit(1)


async def _audit_database(url: str, *, as_json: bool, grace: timedelta, batch_size: int) -> bool:
    from services.db import create_engine, session_factory

    # One snapshot for the whole pass: a refund landing meanwhile is not a difference.
    engine = create_engine(url, isolation_level="REPEATABLE READ")
    try:
        return await audit_ledger(
            session_factory(engine), as_json=as_json, grace=grace, batch_size=batch_size
        )
    finally:
        await engine.dispose()


async def audit_ledger(
    factory: async_sessionmaker[AsyncSession],
    *,
    as_json: bool = False,
    grace: timedelta = timedelta(hours=1),
    batch_size: int = 5_000,
    echo: Callable[[str], None] = click.echo,
) -> bool:
    """Print every difference, then a summary; answer whether the ledger is clean."""
    from services.ledger.audit import LedgerAudit

    async with factory() as session, session.begin():
        run = LedgerAudit(session, now=datetime.now(UTC), grace=grace, batch_size=batch_size)
        async for difference in run.differences():
            echo(json.dumps(difference.as_dict()) if as_json else _describe(difference))
    by_problem = {problem.value: n for problem, n in sorted(run.counts.items())}
    total = sum(by_problem.values())
    if as_json:
        summary = {
            "lines_checked": run.lines_checked,
            "differences": total,
            "by_problem": by_problem,
            "clean": run.clean,
        }
        echo(json.dumps({"summary": summary}))
    else:
        found = ", ".join(f"{name} {n}" for name, n in by_problem.items())
        echo(
            f"ledger audit: {run.lines_checked} recognised lines checked; "
            + (f"{total} differences ({found})" if total else "no differences")
        )
    return run.clean


def _describe(d: Difference) -> str:
    where = f"fulfilment {d.fulfilment_id}"
    if d.fulfilment_id is None:
        where = f"household {d.party} year {d.year}"
        where += f" buyer {d.buyer_id}" if d.buyer_id else " (all buyers)"
    elif d.line_id is not None:
        where += f" line {d.line_id} {d.party_label}"
    return (
        f"{d.problem.value:<20} {where}: expected {d.expected_fen} fen,"
        f" held {d.held_fen} fen ({d.delta_fen:+d})"
    )


@main.command()
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File to write (default: stdout).",
)
def openapi(output: Path | None) -> None:
    """Print the OpenAPI document the app serves (no database needed)."""
    text = openapi_json()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def openapi_json() -> str:
    from app.main import create_app

    # The engine is created lazily and never connects while the schema is built.
    placeholder = Settings(
        database_url="postgresql://unused@localhost/unused",
        jwt_secret="unused",  # noqa: S106
    )
    app = create_app(placeholder)
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _load_demo(settings: Settings) -> None:
    from services.db import create_engine, session_factory, transaction
    from services.demo.load import load_demo
    from services.errors import DomainError

    async def run(url: str) -> DemoSummary:
        engine = create_engine(url)
        now = datetime.now(UTC)
        try:
            # One transaction: a failure half-way leaves no half-built county behind.
            async with transaction(session_factory(engine)) as session:
                return await load_demo(
                    session, pii_key=settings.pii_hash_key, today=now.date(), now=now
                )
        finally:
            await engine.dispose()

    assert settings.database_url
    try:
        summary = asyncio.run(run(settings.database_url))
    except DomainError as exc:
        raise click.ClickException(f"demo not loaded: {exc.detail}") from exc
    click.echo(_describe_demo(summary))


def _describe_demo(summary: DemoSummary) -> str:
    county = f"{summary.county_name} ({summary.county_code})"
    if summary.created:
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary.organisations.items())
        lines = [
            f"demo county {county} loaded:",
            f"  {summary.regions} regions, {summary.sites} service sites",
            f"  {sum(summary.organisations.values())} producer organisations ({kinds}),"
            f" {summary.memberships} memberships",
            f"  {summary.households} households ({summary.poor_households} registered poor,"
            f" {summary.persons} persons), {summary.cadres} paired cadres,"
            f" {summary.incomes} recorded incomes",
            f"  {summary.products} products, {summary.certified} certified"
            f" ({summary.expired_certificates} expired), {summary.products_with_shares}"
            " with supply shares",
        ]
        if summary.trade is not None:
            t = summary.trade
            written = (
                f"; demo thresholds written for {', '.join(map(str, t.thresholds_written))}"
                if t.thresholds_written
                else ""
            )
            lines += [
                f"  {t.orders} orders in {t.years[0]}-{t.years[1]} ({t.delivered} delivered,"
                f" {t.card_orders} by card, {t.under_way} under way, {t.cancelled} cancelled),"
                f" {t.refunds} refunds, {t.buyers} buyers and {t.canteens} canteens",
                f"  ledger: {t.recognised_lines} lines recognised; flags {t.open_flags} open,"
                f" {t.counted_flags} counted; {t.exited} households exited,"
                f" {t.monitored} monitored",
                f"  {t.taobao_village}: {t.shops} online shops, near the Taobao-village test"
                + written,
            ]
    else:
        lines = [f"demo county {county} exists already; nothing loaded"]
    if summary.accounts:
        lines.append("demo accounts (POST /v1/auth/token):")
        width = max(len(a.email) for a in summary.accounts)
        lines += [
            f"  {a.role:<13} {a.email:<{width}}  {a.password:<18} {a.scope}"
            for a in summary.accounts
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
