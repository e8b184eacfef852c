"""Every setting of the service, read from the environment.

The defaults make the single-machine run work with no configuration at all:
an embedded PostgreSQL in the data folder, a generated signing secret kept
beside it. Each field is documented in the README's configuration table.
"""

from __future__ import annotations

import os
import secrets
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("marketplace", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARKETPLACE_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "MARKETPLACE_DATABASE_URL"),
        description=(
            "PostgreSQL URL (postgresql://user:pass@host/db). When unset, the embedded "
            "PostgreSQL in the data folder is used."
        ),
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder for the embedded database and the generated signing secret.",
    )
    jwt_secret: str | None = Field(
        default=None,
        description=(
            "Secret that signs access tokens (HS256). When unset, one is generated once "
            "and kept in <data_dir>/jwt_secret."
        ),
    )
    pii_key: str | None = Field(
        default=None,
        description=(
            "Key of the keyed hash (HMAC-SHA256) kept instead of ID numbers. When unset, one "
            "is generated once and kept in <data_dir>/pii_key. Changing it breaks dedup."
        ),
    )
    export_dir: Path | None = Field(
        default=None,
        description=(
            "Folder where export jobs write their files and downloads read them (unset: "
            "<data_dir>/exports). Shared storage when workers run on other machines."
        ),
    )
    export_pseudonym_key: str | None = Field(
        default=None,
        description=(
            "Key of the keyed hash (HMAC-SHA256) that stands for household ids in pseudonymous "
            "exports. When unset, one is generated once and kept in "
            "<data_dir>/export_pseudonym_key. Changing it changes every pseudonym."
        ),
    )
    token_ttl_seconds: PositiveInt = Field(
        default=3600, description="Lifetime of an access token, in seconds."
    )
    max_body_bytes: PositiveInt = Field(
        default=1_048_576, description="Largest request body accepted; larger bodies get 413."
    )
    login_max_failures: PositiveInt = Field(
        default=10,
        description="Failed logins for one account within the window before 429.",
    )
    login_window_seconds: PositiveInt = Field(
        default=900, description="Window over which failed logins are counted, in seconds."
    )
    db_pool_size: PositiveInt = Field(
        default=20, description="Database connections kept per API process."
    )
    db_max_overflow: int = Field(
        default=5,
        ge=0,
        description="Extra connections allowed above the pool size (closed when returned).",
    )
    stripe_secret_key: str | None = Field(
        default=None,
        description="Stripe secret key (sk_...). Unset: card payments answer a clear problem; "
        "cash on delivery still works.",
    )
    stripe_webhook_secret: str | None = Field(
        default=None, description="Signing secret of the Stripe webhook endpoint (whsec_...)."
    )
    stripe_api_base: str | None = Field(
        default=None, description="Another Stripe API address (a local fake in tests)."
    )
    stripe_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one call to Stripe, in seconds."
    )
    aftership_api_key: str | None = Field(
        default=None, description="AfterShip API key; set: open AfterShip parcels are polled."
    )
    aftership_webhook_secret: str | None = Field(
        default=None, description="AfterShip webhook secret; set: signed pushes are accepted."
    )
    aftership_api_base: str = Field(
        default="https://api.aftership.com/tracking/2024-04",
        description="AfterShip tracking API address (a local fake in tests).",
    )
    kuaidi100_customer: str | None = Field(
        default=None, description="Kuaidi100 customer id for polling (with the key)."
    )
    kuaidi100_key: str | None = Field(default=None, description="Kuaidi100 API key for polling.")
    kuaidi100_salt: str | None = Field(
        default=None, description="Kuaidi100 subscription salt; set: signed pushes are accepted."
    )
    kuaidi100_api_base: str = Field(
        default="https://poll.kuaidi100.com",
        description="Kuaidi100 API address (a local fake in tests).",
    )
    tracking_provider: Literal["aftership", "kuaidi100", "manual"] | None = Field(
        default=None,
        description="Provider of new shipments when the manager names none (unset: the first "
        "configured of aftership and kuaidi100, else manual events only).",
    )
    tracking_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one call to a tracking provider, in seconds."
    )
    tracking_poll_minutes: PositiveInt = Field(
        default=60, description="Minutes between two polls of one open parcel."
    )
    tracking_poll_rate: float = Field(
        default=5.0, gt=0, description="Most calls per second to one tracking provider."
    )
    tracking_expire_days: PositiveInt = Field(
        default=30,
        description="An open parcel without news for this many days is marked expired and no "
        "longer polled (AfterShip's own rule).",
    )
    tracking_stale_days: PositiveInt = Field(
        default=3,
        description="Days without news after which a parcel shows in the managers' queue.",
    )
    platform_fee_bp: int = Field(
        default=500, ge=0, le=10_000, description="Platform fee per order line, basis points."
    )
    platform_fee_bp_certified: int = Field(
        default=300,
        ge=0,
        le=10_000,
        description="Platform fee for certified poverty-alleviation products, basis points.",
    )
    reservation_minutes: PositiveInt = Field(
        default=30, description="Minutes an unpaid Stripe order holds its stock."
    )
    catalogue_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="Seconds a public catalogue page is reused by a process (0: off).",
    )
    log_level: str = Field(default="INFO", description="Log level of the JSON logs.")
    otel_telemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's native OpenTelemetry (traces, metrics and logs through the global "
            "providers). Off, a request does not ask the providers whether anyone listens."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address `marketplace serve` binds.")
    port: PositiveInt = Field(default=8000, description="Port `marketplace serve` binds.")
    workers: PositiveInt = Field(
        default=1,
        le=64,
        validation_alias=AliasChoices("MARKETPLACE_WORKERS", "WEB_CONCURRENCY"),
        description=(
            "API processes `marketplace serve` runs, each accepting on its own "
            "SO_REUSEPORT socket (Linux); about one per core."
        ),
    )
    run_worker_in_process: bool = Field(
        default=True,
        description=(
            "Run a background-job worker inside each API process (the single-machine "
            "default). Set to false when separate `marketplace worker` processes run the jobs."
        ),
    )
    worker_concurrency: PositiveInt = Field(
        default=4,
        description="Jobs one worker (in-process or `marketplace worker`) runs at the same time.",
    )
    flag_dominant_buyer_bp: int = Field(
        default=5_000,
        ge=1,
        le=10_000,
        description="Flag a buyer whose part of a household's yearly ledger income exceeds "
        "this share, in basis points.",
    )
    flag_dominant_buyer_min_fen: int = Field(
        default=100_000,
        ge=0,
        description="Yearly ledger income (fen) a household must reach before the "
        "dominant-buyer rule applies.",
    )
    assessment_date: str = Field(
        default="12-31",
        description="Assessment date of every year, MM-DD in China time; the spike rule "
        "watches the weeks before it.",
    )
    flag_spike_weeks: int = Field(
        default=4,
        ge=1,
        le=52,
        description="Weeks before the assessment date watched for a spike in a household's income.",
    )
    flag_spike_factor: float = Field(
        default=3.0,
        gt=0,
        description="Flag a spike when the household's income in those weeks exceeds this "
        "many times its average for as many weeks earlier in the year.",
    )
    flag_spike_min_fen: int = Field(
        default=50_000,
        ge=0,
        description="Smallest income (fen) in the weeks before the assessment date that can "
        "count as a spike.",
    )
    exit_notice_days: PositiveInt = Field(
        default=7,
        description="Days of public notice of an exit proposal: objections are taken during "
        "it, the decision only after it.",
    )

    @field_validator("assessment_date")
    @classmethod
    def _assessment_date_is_a_day(cls, value: str) -> str:
        month, _, day = value.strip().partition("-")
        if not (
            len(month) == len(day) == 2 and (month + day).isascii() and (month + day).isdigit()
        ):
            raise ValueError("write the assessment date as MM-DD")
        date(2000, int(month), int(day))  # a leap year: 02-29 is a day
        return value.strip()

    @cached_property
    def signing_secret(self) -> str:
        """The configured secret, or the one generated for this data folder."""
        if self.jwt_secret:
            return self.jwt_secret
        return _load_or_create_secret(self.data_dir / "jwt_secret")

    @cached_property
    def pii_hash_key(self) -> bytes:
        """The configured key for ID-number hashes, or the one generated for this data folder."""
        if self.pii_key:
            return self.pii_key.encode()
        return _load_or_create_secret(self.data_dir / "pii_key").encode()

    @cached_property
    def export_path(self) -> Path:
        """The configured export folder, or the one in the data folder."""
        return self.export_dir if self.export_dir is not None else self.data_dir / "exports"

    @cached_property
    def export_pseudonym_secret(self) -> bytes:
        """The configured pseudonym key, or the one generated for this data folder."""
        if self.export_pseudonym_key:
            return self.export_pseudonym_key.encode()
        return _load_or_create_secret(self.data_dir / "export_pseudonym_key").encode()


def _load_or_create_secret(path: Path) -> str:
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    try:
        # link() is atomic and refuses an existing target: when several workers
        # start at once, exactly one secret wins and all of them read it.
        os.link(tmp, path)
    except FileExistsError:
        value = _read_secret(path)
    finally:
        tmp.unlink(missing_ok=True)
    return value


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it or set MARKETPLACE_JWT_SECRET")
    return value
