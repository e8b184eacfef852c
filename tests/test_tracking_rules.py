"""The status rule over every arrival order: a function of the events seen, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.tracking.rules import as_reported, supersedes
from services.tracking.vocabulary import TrackingStatus

S = TrackingStatus
T0 = datetime(2026, 11, 20, tzinfo=UTC)

events = st.lists(
    st.tuples(st.sampled_from(list(S)), st.integers(0, 72).map(lambda h: T0 + timedelta(hours=h))),
    min_size=1,
    max_size=12,
)


def fold(sequence: list[tuple[TrackingStatus, datetime]]) -> TrackingStatus:
    status, at = S.pending, None
    for new, new_at in sequence:
        if supersedes(new, new_at, status, at):
            status, at = new, new_at
    return status


@given(events, st.randoms(use_true_random=False))
def test_the_status_does_not_depend_on_arrival_order_or_repeats(
    sequence: list[tuple[TrackingStatus, datetime]], rnd: object
) -> None:
    shuffled = list(sequence) + list(sequence)[: len(sequence) // 2]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert fold(shuffled) == fold(sequence)


@given(events)
def test_a_return_wins_then_a_delivery_then_the_latest_scan(
    sequence: list[tuple[TrackingStatus, datetime]],
) -> None:
    final = fold(sequence)
    seen = {s for s, _ in sequence}
    if S.returned in seen:
        assert final is S.returned
    elif S.delivered in seen:
        assert final is S.delivered
    else:
        latest = max(at for _, at in sequence)
        assert final in {s for s, at in sequence if at == latest}


def test_a_delivered_parcel_does_not_go_back_to_in_transit() -> None:
    assert not supersedes(S.in_transit, T0 + timedelta(days=1), S.delivered, T0)
    assert supersedes(S.returned, T0 + timedelta(days=1), S.delivered, T0)


def test_a_late_delivery_wins_over_newer_scans() -> None:
    assert supersedes(S.delivered, T0, S.out_for_delivery, T0 + timedelta(hours=3))


def test_a_carrier_delivery_to_a_site_is_waiting_for_pickup() -> None:
    assert as_reported(S.delivered, to_pickup_site=True) is S.available_for_pickup
    assert as_reported(S.delivered, to_pickup_site=False) is S.delivered
    assert as_reported(S.in_transit, to_pickup_site=True) is S.in_transit
