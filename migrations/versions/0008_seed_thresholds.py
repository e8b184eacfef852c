"""seed the poverty and monitoring lines of 2013 to 2020 (data)

Figures from ../shared/DOMAIN_FACTS.md; the national line is the official one for
2020 (about 4,000 yuan) and secondary or unconfirmed before. Monitoring lines
before 2021 did not exist as such: 1.5 times the line is what 2020's practice
gives. Admins change any of them with PUT /v1/assessment/thresholds/{year}; later
years are theirs to set.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# year: (poverty line, monitoring line, source)
LINES = {
    2013: (2736, 4104, "line [S]; monitoring 1.5 x line [derived]"),
    2014: (2800, 4200, "line [U]; monitoring 1.5 x line [derived]"),
    2015: (2855, 4283, "line [S]; monitoring 1.5 x line [derived]"),
    2016: (2952, 4428, "line [U]; monitoring 1.5 x line [derived]"),
    2017: (2952, 4428, "line [U]; monitoring 1.5 x line [derived]"),
    2018: (2995, 4493, "line [U]; monitoring 1.5 x line [derived]"),
    2019: (3218, 4827, "line [S]; monitoring 1.5 x line [derived]"),
    2020: (4000, 6000, "line about 4,000 [O]; monitoring about 1.5 x line [O]"),
}

thresholds = sa.table(
    "assessment_thresholds",
    sa.column("year", sa.SmallInteger),
    sa.column("poverty_line_yuan", sa.Integer),
    sa.column("monitoring_line_yuan", sa.Integer),
    sa.column("source", sa.Text),
)


def upgrade() -> None:
    op.bulk_insert(
        thresholds,
        [
            {"year": y, "poverty_line_yuan": p, "monitoring_line_yuan": m, "source": s}
            for y, (p, m, s) in LINES.items()
        ],
    )


def downgrade() -> None:
    op.execute(
        thresholds.delete().where(
            thresholds.c.year.in_(list(LINES)),
            thresholds.c.source.in_([s for *_, s in LINES.values()]),
        )
    )
