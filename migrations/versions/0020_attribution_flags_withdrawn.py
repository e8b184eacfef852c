"""attribution flags may be withdrawn by their rule; the rule's own entries in the history

The two anomaly rules (dominant_buyer, pre_assessment_spike) judge a household's
year so far. A flag they raised used to stay open whatever came after, so what
assessment counted depended on the order in which deliveries were recognised:
the same backlog, in batches of 10,000 or of 20,000, left 1,205 or 1,079 flags.
Now the rule withdraws an open flag of its own once its condition no longer holds
(status `withdrawn`: the income counts) and opens it again if the condition comes
back. Each of those changes is a row of `attribution_rulings` without an officer.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "('open', 'counted', 'excluded')"
_AFTER = "('open', 'counted', 'excluded', 'withdrawn')"


def _statuses(values: str) -> None:
    for table, column in (("attribution_flags", "status"), ("attribution_rulings", "ruling")):
        op.drop_constraint(op.f(f"ck_{table}_flag_status"), table, type_="check")
        op.create_check_constraint(op.f(f"ck_{table}_flag_status"), table, f"{column} IN {values}")


def upgrade() -> None:
    _statuses(_AFTER)
    op.alter_column(
        "attribution_rulings",
        "officer_id",
        existing_type=sa.Uuid(),
        nullable=True,
        comment="None: the flag's own rule withdrew it or opened it again.",
    )


def downgrade() -> None:
    # Lossy by necessity: before this revision a rule's flag stayed open whatever came after,
    # and only officers wrote the history.
    op.execute("UPDATE attribution_flags SET status = 'open' WHERE status = 'withdrawn'")
    op.execute(
        "UPDATE attribution_flags SET ruled_at = NULL, ruling_reason = NULL "
        "WHERE ruled_by IS NULL AND ruled_at IS NOT NULL"
    )
    op.execute("DELETE FROM attribution_rulings WHERE officer_id IS NULL")
    op.alter_column(
        "attribution_rulings", "officer_id", existing_type=sa.Uuid(), nullable=False, comment=None
    )
    _statuses(_BEFORE)
