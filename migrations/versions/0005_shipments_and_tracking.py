"""shipments, their event timeline, the tracking webhook inbox and provider pauses

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 14:14:16.794766
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracking_providers",
        sa.Column(
            "provider",
            sa.Enum(
                "aftership",
                "kuaidi100",
                "manual",
                name="tracking_source",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "next_slot_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="The poll dispatcher spaces calls from here, so a provider's rate holds.",
        ),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_tracking_providers")),
    )
    op.create_table(
        "tracking_pushes",
        sa.Column(
            "provider",
            sa.Enum(
                "aftership",
                "kuaidi100",
                "manual",
                name="tracking_source",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("tracking_number", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider", "delivery_id", name=op.f("pk_tracking_pushes")),
    )
    op.create_index(
        "ix_tracking_pushes_received_at", "tracking_pushes", ["received_at"], unique=False
    )
    op.create_table(
        "shipments",
        sa.Column("fulfilment_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("cooperative_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("carrier", sa.String(length=20), nullable=False),
        sa.Column("tracking_number", sa.String(length=40), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "aftership",
                "kuaidi100",
                "manual",
                name="tracking_source",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "info_received",
                "in_transit",
                "out_for_delivery",
                "available_for_pickup",
                "delivered",
                "failed_attempt",
                "exception",
                "returned",
                "expired",
                name="tracking_status",
                native_enum=False,
                create_constraint=True,
                length=30,
            ),
            nullable=False,
        ),
        sa.Column(
            "status_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the event that set the current status happened.",
        ),
        sa.Column(
            "last_event_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="The latest event's time.",
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pickup_site_id", sa.Uuid(), nullable=True),
        sa.Column(
            "next_poll_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the poller asks the provider next; NULL: not polled.",
        ),
        sa.Column("poll_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["cooperative_id"],
            ["cooperatives.id"],
            name=op.f("fk_shipments_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_shipments_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["fulfilment_id"],
            ["fulfilments.id"],
            name=op.f("fk_shipments_fulfilment_id_fulfilments"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_shipments_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["pickup_site_id"],
            ["service_sites.id"],
            name=op.f("fk_shipments_pickup_site_id_service_sites"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipments")),
        sa.UniqueConstraint(
            "carrier", "tracking_number", name=op.f("uq_shipments_carrier_tracking_number")
        ),
    )
    op.create_index(
        "ix_shipments_cooperative_id_status",
        "shipments",
        ["cooperative_id", "status"],
        unique=False,
    )
    op.create_index("ix_shipments_fulfilment_id", "shipments", ["fulfilment_id"], unique=False)
    op.create_index("ix_shipments_order_id", "shipments", ["order_id"], unique=False)
    op.create_index(
        "ix_shipments_pickup_site_id",
        "shipments",
        ["pickup_site_id"],
        unique=False,
        postgresql_where=sa.text("pickup_site_id IS NOT NULL"),
    )
    op.create_index(
        "ix_shipments_provider_next_poll_at",
        "shipments",
        ["provider", "next_poll_at"],
        unique=False,
        postgresql_where=sa.text("next_poll_at IS NOT NULL"),
    )
    op.create_table(
        "shipment_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "aftership",
                "kuaidi100",
                "manual",
                name="tracking_source",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "kind",
            sa.Enum(
                "handed_over",
                "received_at_site",
                "picked_up",
                "delivered",
                "failed_attempt",
                "cash_collected",
                "refused",
                name="manual_event",
                native_enum=False,
                create_constraint=True,
                length=30,
            ),
            nullable=True,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "info_received",
                "in_transit",
                "out_for_delivery",
                "available_for_pickup",
                "delivered",
                "failed_attempt",
                "exception",
                "returned",
                "expired",
                name="tracking_status",
                native_enum=False,
                create_constraint=True,
                length=30,
            ),
            nullable=False,
        ),
        sa.Column("raw_status", sa.String(length=80), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "dedupe_key",
            sa.CHAR(length=32),
            nullable=False,
            comment="Digest of (source status, time, location), or of an Idempotency-Key.",
        ),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_shipment_events_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_shipment_events_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment_events")),
        sa.UniqueConstraint(
            "shipment_id", "dedupe_key", name=op.f("uq_shipment_events_shipment_id_dedupe_key")
        ),
    )
    op.create_index(
        "ix_shipment_events_shipment_id_occurred_at",
        "shipment_events",
        ["shipment_id", "occurred_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_shipment_events_shipment_id_occurred_at", table_name="shipment_events")
    op.drop_table("shipment_events")
    op.drop_index(
        "ix_shipments_provider_next_poll_at",
        table_name="shipments",
        postgresql_where=sa.text("next_poll_at IS NOT NULL"),
    )
    op.drop_index(
        "ix_shipments_pickup_site_id",
        table_name="shipments",
        postgresql_where=sa.text("pickup_site_id IS NOT NULL"),
    )
    op.drop_index("ix_shipments_order_id", table_name="shipments")
    op.drop_index("ix_shipments_fulfilment_id", table_name="shipments")
    op.drop_index("ix_shipments_cooperative_id_status", table_name="shipments")
    op.drop_table("shipments")
    op.drop_index("ix_tracking_pushes_received_at", table_name="tracking_pushes")
    op.drop_table("tracking_pushes")
    op.drop_table("tracking_providers")
