"""Fixtures of the fault tests; plain helpers live in tests/faults/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.stripe_server import FakeStripe, FakeStripeServer, serve_fake_stripe


@pytest.fixture
def own_stripe() -> Iterator[FakeStripeServer]:
    """A FakeStripe of the test's own: its faults and records concern that test alone."""
    with serve_fake_stripe(FakeStripe(seed=11)) as server:
        yield server
