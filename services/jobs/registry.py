"""How areas declare background work: job handlers by kind, and periodic tasks.

Every area registers on the one module-level `registry` (import it from here or
from `services.jobs.service`) and adds its module to `load_handlers()`, which
workers call before they start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

Handler = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]
PeriodicTask = Callable[[AsyncSession], Awaitable[None]]

HandlerT = TypeVar("HandlerT", bound=Handler)
PeriodicTaskT = TypeVar("PeriodicTaskT", bound=PeriodicTask)


class Retry(Exception):
    """Raised by a handler to run the job again after `after`, without using up an attempt.

    For an outside system that says "not now" (HTTP 429 with Retry-After, a parcel
    not yet moving). What the handler wrote is rolled back, as with any exception.
    """

    def __init__(self, after: timedelta, reason: str = "") -> None:
        super().__init__(reason or f"retry in {after}")
        self.after = max(after, timedelta(0))


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    every: timedelta
    task: PeriodicTask


class JobRegistry:
    """Maps job kinds to handlers, and names periodic tasks with their interval."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._periodic: dict[str, Periodic] = {}

    def handler(self, kind: str) -> Callable[[HandlerT], HandlerT]:
        """Register `async def handler(session, payload) -> None` for jobs of `kind`."""

        def register(func: HandlerT) -> HandlerT:
            # Two handlers for one kind would make which one runs depend on import order.
            if self._handlers.get(kind, func) is not func:
                raise ValueError(f"a handler for job kind {kind!r} is registered already")
            self._handlers[kind] = func
            return func

        return register

    def periodic(self, name: str, *, every: timedelta) -> Callable[[PeriodicTaskT], PeriodicTaskT]:
        """Register `async def task(session) -> None` to run once per `every`, cluster-wide."""
        if every <= timedelta(0):
            raise ValueError("a periodic task needs a positive interval")

        def register(func: PeriodicTaskT) -> PeriodicTaskT:
            existing = self._periodic.get(name)
            if existing is not None and existing.task is not func:
                raise ValueError(f"a periodic task named {name!r} is registered already")
            self._periodic[name] = Periodic(name=name, every=every, task=func)
            return func

        return register

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def periodic_tasks(self) -> list[Periodic]:
        return [self._periodic[name] for name in sorted(self._periodic)]


registry = JobRegistry()


def load_handlers() -> JobRegistry:
    """Import every module that registers handlers or periodic tasks; return the registry.

    A worker knows only the kinds registered before it starts, and it claims only
    those, so each area that adds handlers adds its module here.
    """
    # Imported here, not at the top: those modules import `registry` from this one.
    import services.catalog.ranking
    import services.exports.jobs
    import services.jobs.tasks
    import services.ledger.jobs
    import services.payments.jobs
    import services.tracking.polling  # noqa: F401

    return registry
