"""Python's cyclic garbage collector, tuned to the work of the process that runs it.

CPython collects its youngest generation every 700 allocations (net of frees) and
the older ones every ten and a hundred of those. Our processes keep large live
structures (the app's routes, models and SQLAlchemy's mappers; a backlog batch's
rows), which the collector traverses again and again although they hold no garbage.
Both tunings freeze what is alive when they start (`gc.freeze`: left out of every
collection until the end) and raise the thresholds, and both put the collector back
as it was when their block ends, so that a test session that runs them is unchanged.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# An API process serving requests: each request allocates thousands of objects and
# frees nearly all of them itself (reference counting). On the checkout and Stripe
# webhook benches (2 workers, 32 clients), this against the defaults: checkout (cash on
# delivery) 356 and 284 orders/s against 280 and 235, Stripe webhooks 1,158 events/s
# against 825 and 1,004, and a p99 latency about a third lower.
REQUESTS = (50_000, 20, 100)
# A command working in large batches, which collects itself between them: with the
# defaults, 40% of `ledger-recognise`'s CPU was the collector.
BATCHES = (100_000, 50, 1_000)


@contextmanager
def tuned(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """Freeze what is alive now and collect at `thresholds` (`gc.set_threshold`) until the
    block ends; then the thresholds are set back and what was frozen is collectable again.

    One block at a time in a process: freezing and unfreezing act on the whole process,
    so an inner block's end would unfreeze what the outer one froze.
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
