"""The status rule over every arrival order: a function of the events seen, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

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


# Every event is applied by the SQL function `tracking_apply`, which folds new events
# into the parcel's status with `tracking_fold`; the rule above is its specification.
_SQL_FOLD = text(
    "SELECT status, status_at FROM tracking_fold(:status, :status_at, :to_site, "
    "CAST(:statuses AS text[]), CAST(:times AS timestamptz[]))"
)


def fold_onto(
    status: TrackingStatus,
    status_at: datetime | None,
    to_site: bool,
    sequence: list[tuple[TrackingStatus, datetime]],
) -> tuple[TrackingStatus, datetime | None]:
    """The Python rule over new events in time order, as the parcel's state moves."""
    for reported, at in sorted(sequence, key=lambda event: event[1]):
        candidate = as_reported(reported, to_pickup_site=to_site)
        if supersedes(candidate, at, status, status_at):
            status, status_at = candidate, at
    return status, status_at


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(state=(S.pending, None), to_site=True, sequence=[(S.delivered, T0)])
@example(
    state=(S.delivered, T0),
    to_site=False,
    sequence=[(S.in_transit, T0 + timedelta(hours=1)), (S.returned, T0)],
)
@example(
    state=(S.in_transit, T0),
    to_site=False,
    sequence=[(S.exception, T0), (S.out_for_delivery, T0), (S.info_received, T0)],
)
@given(
    state=st.tuples(
        st.sampled_from(list(S)),
        st.none() | st.integers(0, 72).map(lambda h: T0 + timedelta(hours=h)),
    ),
    to_site=st.booleans(),
    sequence=st.lists(
        st.tuples(
            st.sampled_from(list(S)),
            st.integers(0, 72).map(lambda h: T0 + timedelta(hours=h)),
        ),
        max_size=12,
    ),
)
async def test_the_fold_in_sql_is_the_rule_in_python(connection, state, to_site, sequence) -> None:
    status, status_at = state
    row = (
        await connection.execute(
            _SQL_FOLD,
            {
                "status": status.value,
                "status_at": status_at,
                "to_site": to_site,
                "statuses": [s.value for s, _ in sequence],
                "times": [at for _, at in sequence],
            },
        )
    ).one()
    assert (TrackingStatus(row.status), row.status_at) == fold_onto(
        status, status_at, to_site, sequence
    )
