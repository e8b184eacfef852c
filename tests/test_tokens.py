"""Access tokens: the reader verifies each distinct token once, and still checks expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.errors import Unauthenticated
from services.users import tokens
from services.users.tokens import TokenReader, issue_token

SECRET = "a-test-secret-of-some-length-0123456789"
# Issued now: PyJWT checks a token it verifies against the real clock.
NOW = datetime.now(UTC).replace(microsecond=0)


def token(user_id: uuid.UUID | None = None, *, ttl: timedelta = timedelta(hours=1)) -> str:
    return issue_token(
        user_id=user_id or uuid.uuid4(), role="buyer", secret=SECRET, ttl=ttl, now=NOW
    )


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens actually verified (by `read_token`), in order."""
    seen: list[str] = []
    verify = tokens.read_token

    def counted(value: str, *, secret: str) -> tokens.TokenClaims:
        seen.append(value)
        return verify(value, secret=secret)

    monkeypatch.setattr(tokens, "read_token", counted)
    return seen


def test_a_token_is_verified_once_and_its_claims_served_again(verifications) -> None:
    reader = TokenReader(SECRET)
    user_id = uuid.uuid4()
    sent = token(user_id)

    first = reader.read(sent, now=NOW)
    again = reader.read(sent, now=NOW + timedelta(minutes=5))

    assert first == again
    assert first.user_id == user_id
    assert verifications == [sent]


def test_a_verified_token_is_refused_once_it_expires(verifications) -> None:
    reader = TokenReader(SECRET)
    sent = token(ttl=timedelta(minutes=10))
    reader.read(sent, now=NOW)

    with pytest.raises(Unauthenticated) as refused:
        reader.read(sent, now=NOW + timedelta(minutes=10))
    assert refused.value.extra["reason"] == "token-expired"
    # Still valid one second before, as PyJWT would say.
    assert reader.read(sent, now=NOW + timedelta(minutes=10, seconds=-1)).role == "buyer"


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-token",
        issue_token(
            user_id=uuid.uuid4(),
            role="admin",
            secret="another-secret-of-some-length-0123456789",
            ttl=timedelta(hours=1),
            now=NOW,
        ),
    ],
)
def test_a_bad_token_is_refused_every_time_and_never_kept(verifications, bad: str) -> None:
    reader = TokenReader(SECRET)
    for _ in range(2):
        with pytest.raises(Unauthenticated) as refused:
            reader.read(bad, now=NOW)
        assert refused.value.extra["reason"] == "token-invalid"
    assert verifications == [bad, bad]


def test_beyond_its_size_the_reader_forgets_the_least_recently_used_token(verifications) -> None:
    reader = TokenReader(SECRET, maxsize=2)
    a, b, c = token(), token(), token()
    for sent in (a, b, a, c, a, b):
        reader.read(sent, now=NOW)

    # b was dropped for c (a had been used since), then verified again.
    assert verifications == [a, b, c, b]
