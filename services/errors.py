"""Domain errors. The delivery layer maps each to one problem type and HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "domain-error"
    # True when what the request wrote before failing is itself a fact to keep
    # (a failed login counts toward the throttle); the unit of work then commits.
    keep_changes = False

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class Invalid(DomainError):
    """The input breaks a rule the schema could not express."""

    code = "invalid"


class NotFound(DomainError):
    code = "not-found"


class Conflict(DomainError):
    """The request clashes with the current state (duplicate, illegal transition)."""

    code = "conflict"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class Unavailable(DomainError):
    """An outside system (Stripe, a tracker) did not answer; the same request may be retried."""

    code = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class TooManyAttempts(DomainError):
    code = "too-many-attempts"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
