"""How a parcel's current status follows its events, whatever order they arrive in.

Pure functions, so that the rule can be tested over every arrival order. The
current status is a function of the set of events seen, not of their order:

- a return, once reported, wins (a refused or returned parcel is not delivered);
- otherwise a delivery, once reported, wins, even when it arrives late;
- otherwise the latest event by its own time decides, ties broken by progress.
"""

from __future__ import annotations

from datetime import datetime

from services.tracking.vocabulary import TrackingStatus

S = TrackingStatus

# Progress along a normal journey, used only to break ties between events that
# carry the same time (providers often stamp several scans with one minute).
_PROGRESS = {
    S.pending: 0,
    S.expired: 1,
    S.info_received: 2,
    S.in_transit: 3,
    S.exception: 4,
    S.failed_attempt: 5,
    S.out_for_delivery: 6,
    S.available_for_pickup: 7,
    S.delivered: 8,
    S.returned: 9,
}

# A status that nothing later replaces, by precedence.
_STICKY = (S.returned, S.delivered)


def supersedes(
    new: TrackingStatus,
    new_at: datetime,
    current: TrackingStatus,
    current_at: datetime | None,
) -> bool:
    """Whether an event with status `new` at `new_at` replaces the current status."""
    for sticky in _STICKY:
        if current is sticky:
            return False
        if new is sticky:
            return True
    if current_at is None:
        return True
    return (new_at, _PROGRESS[new]) > (current_at, _PROGRESS[current])


def as_reported(status: TrackingStatus, *, to_pickup_site: bool) -> TrackingStatus:
    """What a provider's status means for this parcel.

    A carrier "delivers" a pickup parcel to the village site; for the buyer it is
    then waiting to be collected, and it is delivered when the site hands it over.
    """
    if to_pickup_site and status is S.delivered:
        return S.available_for_pickup
    return status
