"""shipment events may come from the marketplace itself (source `system`: an expiry)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 18:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_shipment_events_tracking_source"), "shipment_events", type_="check")
    op.create_check_constraint(
        op.f("ck_shipment_events_event_source"),
        "shipment_events",
        "source IN ('aftership', 'kuaidi100', 'manual', 'system')",
    )


def downgrade() -> None:
    # Lossy by necessity: the old check knows no `system`; such events become `manual`.
    op.execute("UPDATE shipment_events SET source = 'manual' WHERE source = 'system'")
    op.drop_constraint(op.f("ck_shipment_events_event_source"), "shipment_events", type_="check")
    op.create_check_constraint(
        op.f("ck_shipment_events_tracking_source"),
        "shipment_events",
        "source IN ('aftership', 'kuaidi100', 'manual')",
    )
