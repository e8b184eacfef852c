"""attribution ledger (append-only, enforced by a trigger), flags and rulings, payouts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:27:57.459832
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attribution_flags",
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "rule",
            sa.Enum(
                "supplier_household",
                "cooperative_insider",
                "dominant_buyer",
                "pre_assessment_spike",
                name="flag_rule",
                native_enum=False,
                create_constraint=True,
                length=30,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "counted",
                "excluded",
                name="flag_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            server_default="open",
            nullable=False,
        ),
        sa.Column(
            "dedupe_key",
            sa.String(length=200),
            nullable=False,
            comment="One flag per rule and subject.",
        ),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("buyer_id", sa.Uuid(), nullable=True),
        sa.Column("household_id", sa.Uuid(), nullable=True),
        sa.Column("cooperative_id", sa.Uuid(), nullable=True),
        sa.Column("year", sa.SmallInteger(), nullable=True),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="What fired the rule (which field matched, the figures).",
        ),
        sa.Column("ruled_by", sa.Uuid(), nullable=True),
        sa.Column("ruled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ruling_reason", sa.Text(), nullable=True),
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
            ["buyer_id"], ["users.id"], name=op.f("fk_attribution_flags_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["cooperative_id"],
            ["cooperatives.id"],
            name=op.f("fk_attribution_flags_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_attribution_flags_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_attribution_flags_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["ruled_by"], ["users.id"], name=op.f("fk_attribution_flags_ruled_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_flags")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_attribution_flags_dedupe_key")),
    )
    op.create_index(
        "ix_attribution_flags_county_code_status",
        "attribution_flags",
        ["county_code", "status", "created_at"],
        unique=False,
    )
    op.create_table(
        "attribution_rulings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("flag_id", sa.Uuid(), nullable=False),
        sa.Column(
            "ruling",
            sa.Enum(
                "open",
                "counted",
                "excluded",
                name="flag_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("officer_id", sa.Uuid(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["flag_id"],
            ["attribution_flags.id"],
            name=op.f("fk_attribution_rulings_flag_id_attribution_flags"),
        ),
        sa.ForeignKeyConstraint(
            ["officer_id"], ["users.id"], name=op.f("fk_attribution_rulings_officer_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_rulings")),
    )
    op.create_index(
        op.f("ix_attribution_rulings_flag_id"), "attribution_rulings", ["flag_id"], unique=False
    )
    op.create_table(
        "ledger_recognitions",
        sa.Column("fulfilment_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "recognised_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Delivery, or cash collection.",
        ),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["fulfilment_id"],
            ["fulfilments.id"],
            name=op.f("fk_ledger_recognitions_fulfilment_id_fulfilments"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_ledger_recognitions_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("fulfilment_id", name=op.f("pk_ledger_recognitions")),
    )
    op.create_index(
        op.f("ix_ledger_recognitions_order_id"), "ledger_recognitions", ["order_id"], unique=False
    )
    op.create_table(
        "payouts",
        sa.Column("fulfilment_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("cooperative_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "held",
                "payable",
                "pending",
                "transferred",
                "failed",
                name="payout_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "destination",
            sa.String(length=255),
            nullable=True,
            comment="The Stripe connected account (acct_...), when there is one.",
        ),
        sa.Column("provider_transfer_id", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
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
            name=op.f("fk_payouts_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["fulfilment_id"], ["fulfilments.id"], name=op.f("fk_payouts_fulfilment_id_fulfilments")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_payouts_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("fulfilment_id", name=op.f("uq_payouts_fulfilment_id")),
        sa.UniqueConstraint("provider_transfer_id", name=op.f("uq_payouts_provider_transfer_id")),
    )
    op.create_index(
        "ix_payouts_cooperative_id_created_at",
        "payouts",
        ["cooperative_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "attribution_flag_lines",
        sa.Column("flag_id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flag_id"],
            ["attribution_flags.id"],
            name=op.f("fk_attribution_flag_lines_flag_id_attribution_flags"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_attribution_flag_lines_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["order_lines.id"],
            name=op.f("fk_attribution_flag_lines_line_id_order_lines"),
        ),
        sa.PrimaryKeyConstraint(
            "flag_id", "line_id", "household_id", name=op.f("pk_attribution_flag_lines")
        ),
    )
    op.create_index(
        "ix_attribution_flag_lines_line_id_household_id",
        "attribution_flag_lines",
        ["line_id", "household_id"],
        unique=False,
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("fulfilment_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("cooperative_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("buyer_id", sa.Uuid(), nullable=False),
        sa.Column(
            "household_id",
            sa.Uuid(),
            nullable=True,
            comment="NULL: the cooperative's part of the line.",
        ),
        sa.Column(
            "kind",
            sa.Enum(
                "recognition",
                "adjustment",
                name="ledger_entry_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column(
            "year",
            sa.SmallInteger(),
            nullable=False,
            comment="Assessment year: the calendar year of effective_at in China.",
        ),
        sa.Column(
            "effective_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Delivery (cash: collection) for a recognition, the refund for an adjustment.",
        ),
        sa.Column("refund_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["users.id"], name=op.f("fk_ledger_entries_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["cooperative_id"],
            ["cooperatives.id"],
            name=op.f("fk_ledger_entries_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["fulfilment_id"],
            ["fulfilments.id"],
            name=op.f("fk_ledger_entries_fulfilment_id_fulfilments"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_ledger_entries_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["order_lines.id"], name=op.f("fk_ledger_entries_line_id_order_lines")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_ledger_entries_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_ledger_entries_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_ledger_entries_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(
        "ix_ledger_entries_cooperative_id_effective_at",
        "ledger_entries",
        ["cooperative_id", "effective_at"],
        unique=False,
    )
    op.create_index(
        "ix_ledger_entries_county_code_year",
        "ledger_entries",
        ["county_code", "year"],
        unique=False,
    )
    op.create_index(
        "ix_ledger_entries_household_id_year",
        "ledger_entries",
        ["household_id", "year"],
        unique=False,
        postgresql_where=sa.text("household_id IS NOT NULL"),
    )
    op.create_index("ix_ledger_entries_line_id", "ledger_entries", ["line_id"], unique=False)
    op.add_column(
        "cooperatives",
        sa.Column(
            "stripe_account_id",
            sa.String(length=255),
            nullable=True,
            comment="Stripe connected account (acct_...) that receives settlements.",
        ),
    )
    op.add_column(
        "fulfilments",
        sa.Column(
            "delivered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When its last parcel arrived (by the carrier's or the site's clock).",
        ),
    )
    op.add_column(
        "fulfilments",
        sa.Column(
            "recognised_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When its lines entered the attribution ledger.",
        ),
    )
    op.create_index(
        "ix_fulfilments_unrecognised",
        "fulfilments",
        ["delivered_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'delivered' AND recognised_at IS NULL"),
    )
    # The ledger is evidence: the database itself refuses to change or remove a row.
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_update_delete BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()"
    )


def downgrade() -> None:
    op.drop_index(
        "ix_fulfilments_unrecognised",
        table_name="fulfilments",
        postgresql_where=sa.text("status = 'delivered' AND recognised_at IS NULL"),
    )
    op.drop_column("fulfilments", "recognised_at")
    op.drop_column("fulfilments", "delivered_at")
    op.execute("DROP TRIGGER ledger_entries_no_truncate ON ledger_entries")
    op.execute("DROP TRIGGER ledger_entries_no_update_delete ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_column("cooperatives", "stripe_account_id")
    op.drop_index("ix_ledger_entries_line_id", table_name="ledger_entries")
    op.drop_index(
        "ix_ledger_entries_household_id_year",
        table_name="ledger_entries",
        postgresql_where=sa.text("household_id IS NOT NULL"),
    )
    op.drop_index("ix_ledger_entries_county_code_year", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_cooperative_id_effective_at", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(
        "ix_attribution_flag_lines_line_id_household_id", table_name="attribution_flag_lines"
    )
    op.drop_table("attribution_flag_lines")
    op.drop_index("ix_payouts_cooperative_id_created_at", table_name="payouts")
    op.drop_table("payouts")
    op.drop_index(op.f("ix_ledger_recognitions_order_id"), table_name="ledger_recognitions")
    op.drop_table("ledger_recognitions")
    op.drop_index(op.f("ix_attribution_rulings_flag_id"), table_name="attribution_rulings")
    op.drop_table("attribution_rulings")
    op.drop_index("ix_attribution_flags_county_code_status", table_name="attribution_flags")
    op.drop_table("attribution_flags")
