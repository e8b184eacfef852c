"""assessment thresholds with their edit history, exit proposals and objections, export jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 17:35:34.195998
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "assessment_threshold_edits",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("edited_by", sa.Uuid(), nullable=True),
        sa.Column(
            "edited_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["edited_by"], ["users.id"], name=op.f("fk_assessment_threshold_edits_edited_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessment_threshold_edits")),
    )
    op.create_index(
        "ix_assessment_threshold_edits_year",
        "assessment_threshold_edits",
        ["year", "id"],
        unique=False,
    )
    op.create_table(
        "assessment_thresholds",
        sa.Column("year", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "poverty_line_yuan",
            sa.Integer(),
            nullable=False,
            comment="Per person per year, current prices.",
        ),
        sa.Column(
            "monitoring_line_yuan",
            sa.Integer(),
            nullable=False,
            comment="Per person per year: under it, an exited household is watched.",
        ),
        sa.Column(
            "income_drop_bp",
            sa.Integer(),
            server_default="3000",
            nullable=False,
            comment="A fall in per-capita income from the year before beyond this share flags it.",
        ),
        sa.Column(
            "exit_incidence_bp",
            sa.Integer(),
            server_default="200",
            nullable=False,
            comment="County and village exit: incidence below this.",
        ),
        sa.Column(
            "western_exit_incidence_bp",
            sa.Integer(),
            server_default="300",
            nullable=False,
            comment="The same, in the western region.",
        ),
        sa.Column(
            "taobao_sales_yuan",
            sa.BigInteger(),
            server_default="10000000",
            nullable=False,
            comment="Taobao village: yearly sales at least.",
        ),
        sa.Column(
            "taobao_active_stores",
            sa.Integer(),
            server_default="100",
            nullable=False,
            comment="... and at least this many active stores,",
        ),
        sa.Column(
            "taobao_store_share_bp",
            sa.Integer(),
            server_default="1000",
            nullable=False,
            comment="... or active stores in this share of households.",
        ),
        sa.Column("source", sa.Text(), nullable=True, comment="Where the figures come from."),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "exit_incidence_bp BETWEEN 0 AND 10000",
            name=op.f("ck_assessment_thresholds_exit_incidence_range"),
        ),
        sa.CheckConstraint(
            "income_drop_bp BETWEEN 1 AND 10000",
            name=op.f("ck_assessment_thresholds_income_drop_bp_range"),
        ),
        sa.CheckConstraint(
            "monitoring_line_yuan >= poverty_line_yuan",
            name=op.f("ck_assessment_thresholds_monitoring_line_not_below_line"),
        ),
        sa.CheckConstraint(
            "poverty_line_yuan > 0", name=op.f("ck_assessment_thresholds_poverty_line_positive")
        ),
        sa.CheckConstraint(
            "taobao_active_stores >= 0",
            name=op.f("ck_assessment_thresholds_taobao_stores_not_negative"),
        ),
        sa.CheckConstraint(
            "taobao_sales_yuan >= 0",
            name=op.f("ck_assessment_thresholds_taobao_sales_not_negative"),
        ),
        sa.CheckConstraint(
            "taobao_store_share_bp BETWEEN 0 AND 10000",
            name=op.f("ck_assessment_thresholds_taobao_store_share_range"),
        ),
        sa.CheckConstraint(
            "western_exit_incidence_bp BETWEEN 0 AND 10000",
            name=op.f("ck_assessment_thresholds_western_incidence_range"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_assessment_thresholds_updated_by_users")
        ),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_assessment_thresholds")),
    )
    op.create_table(
        "exit_proposals",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "year", sa.SmallInteger(), nullable=False, comment="The assessment year it rests on."
        ),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "approved",
                "rejected",
                name="exit_proposal_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            server_default="open",
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "evidence",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="The household-year row the proposal was made on.",
        ),
        sa.Column("from_status", sa.String(length=24), nullable=False),
        sa.Column("proposed_by", sa.Uuid(), nullable=False),
        sa.Column("notice_starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notice_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
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
            ["decided_by"], ["users.id"], name=op.f("fk_exit_proposals_decided_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_exit_proposals_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["proposed_by"], ["users.id"], name=op.f("fk_exit_proposals_proposed_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exit_proposals")),
    )
    op.create_index(
        "ix_exit_proposals_county_code_status",
        "exit_proposals",
        ["county_code", "status"],
        unique=False,
    )
    op.create_index(
        "uq_exit_proposals_household_id_open",
        "exit_proposals",
        ["household_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "exports",
        sa.Column(
            "kind",
            sa.Enum(
                "household_year",
                "village",
                "county",
                name="export_table",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "format",
            sa.Enum(
                "csv",
                "xlsx",
                "jsonl",
                name="export_format",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("region_code", sa.CHAR(length=12), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("include_names", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="Everything asked, as given.",
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                name="export_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            server_default="queued",
            nullable=False,
        ),
        sa.Column("rows_expected", sa.BigInteger(), nullable=True),
        sa.Column("rows_written", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_name", sa.String(length=200), nullable=True),
        sa.Column("byte_size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.CHAR(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
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
            ["requested_by"], ["users.id"], name=op.f("fk_exports_requested_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    op.create_index(
        "ix_exports_requested_by_created_at",
        "exports",
        ["requested_by", "created_at"],
        unique=False,
    )
    op.create_table(
        "exit_objections",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("proposal_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "objector",
            sa.String(length=200),
            nullable=True,
            comment="Who objected, as they chose to be named (may be anonymous).",
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.Uuid(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["exit_proposals.id"],
            name=op.f("fk_exit_objections_proposal_id_exit_proposals"),
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_exit_objections_recorded_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exit_objections")),
    )
    op.create_index(
        op.f("ix_exit_objections_proposal_id"), "exit_objections", ["proposal_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_exit_objections_proposal_id"), table_name="exit_objections")
    op.drop_table("exit_objections")
    op.drop_index("ix_exports_requested_by_created_at", table_name="exports")
    op.drop_table("exports")
    op.drop_index(
        "uq_exit_proposals_household_id_open",
        table_name="exit_proposals",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.drop_index("ix_exit_proposals_county_code_status", table_name="exit_proposals")
    op.drop_table("exit_proposals")
    op.drop_table("assessment_thresholds")
    op.drop_index("ix_assessment_threshold_edits_year", table_name="assessment_threshold_edits")
    op.drop_table("assessment_threshold_edits")
