"""regions cooperatives households catalogue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:50:51.023042
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SEARCH_GRAMS = r"""
CREATE FUNCTION search_grams(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT gram), '{}')
    FROM (SELECT lower(value) AS v) AS s,
         generate_series(1, char_length(s.v)) AS i,
         LATERAL (VALUES (substr(s.v, i, 1)), (substr(s.v, i, 2))) AS g(gram)
    WHERE gram !~ '\s'
$$
"""

# The grams a search term must all have: its bigrams, or the character itself.
SEARCH_QUERY_GRAMS = r"""
CREATE FUNCTION search_query_grams(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN char_length(v) < 2 THEN ARRAY[v]
           ELSE (SELECT coalesce(array_agg(DISTINCT substr(v, i, 2)), '{}')
                 FROM generate_series(1, char_length(v) - 1) AS i)
           END
    FROM (SELECT lower(value) AS v) AS s
$$
"""


def upgrade() -> None:
    op.execute(SEARCH_GRAMS)
    op.execute(SEARCH_QUERY_GRAMS)
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_role", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("subject_type", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor_id"], unique=False)
    op.create_index(
        op.f("ix_audit_events_subject_id"), "audit_events", ["subject_id"], unique=False
    )
    op.create_table(
        "regions",
        sa.Column("code", sa.CHAR(length=12), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "level",
            sa.Enum(
                "province",
                "city",
                "county",
                "township",
                "village",
                name="region_level",
                native_enum=False,
                create_constraint=True,
                length=10,
            ),
            nullable=False,
        ),
        sa.Column("parent_code", sa.CHAR(length=12), nullable=True),
        sa.Column("western", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "urban",
            sa.Boolean(),
            server_default="false",
            nullable=False,
            comment="An urban residents' committee rather than an administrative village.",
        ),
        sa.Column(
            "rural_population", sa.Integer(), nullable=True, comment="Persons, for incidence."
        ),
        sa.Column(
            "household_count",
            sa.Integer(),
            nullable=True,
            comment="All households of a village, poor or not (Taobao-village test).",
        ),
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
        sa.CheckConstraint("code ~ '^[0-9]{12}$'", name=op.f("ck_regions_code_is_12_digits")),
        sa.ForeignKeyConstraint(
            ["parent_code"], ["regions.code"], name=op.f("fk_regions_parent_code_regions")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_regions")),
    )
    op.create_index("ix_regions_parent_code", "regions", ["parent_code"], unique=False)
    op.create_table(
        "cooperatives",
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("village_code", sa.CHAR(length=12), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "cooperative",
                "household_shop",
                "enterprise",
                name="cooperative_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "credit_code", sa.CHAR(length=18), nullable=False, comment="Unified social credit code."
        ),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "suspended",
                "closed",
                name="cooperative_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            server_default="active",
            nullable=False,
        ),
        sa.Column("linkages", sa.ARRAY(sa.String(length=20)), server_default="{}", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
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
            ["village_code"], ["regions.code"], name=op.f("fk_cooperatives_village_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cooperatives")),
        sa.UniqueConstraint("credit_code", name=op.f("uq_cooperatives_credit_code")),
    )
    op.create_index(
        op.f("ix_cooperatives_county_code"), "cooperatives", ["county_code"], unique=False
    )
    op.create_index(
        op.f("ix_cooperatives_village_code"), "cooperatives", ["village_code"], unique=False
    )
    op.create_table(
        "households",
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("village_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "address", sa.String(length=300), nullable=True, comment="Down to the village group."
        ),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column(
            "poor",
            sa.Boolean(),
            server_default="true",
            nullable=False,
            comment="Registered poor (建档立卡) or an ordinary member household.",
        ),
        sa.Column(
            "household_type",
            sa.Enum(
                "ordinary",
                "minimum_living",
                "five_guarantee",
                "allowance_poor",
                name="household_type",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "standard",
            sa.Enum(
                "national",
                "provincial",
                "municipal",
                name="poverty_standard",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "main_cause",
            sa.Enum(
                "illness",
                "disability",
                "education",
                "disaster",
                "land",
                "water",
                "technology",
                "labour",
                "funds",
                "transport",
                "motivation",
                "other",
                name="poverty_cause",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "other_causes", sa.ARRAY(sa.String(length=24)), server_default="{}", nullable=False
        ),
        sa.Column("registration_year", sa.SmallInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "registered",
                "exit_proposed",
                "exited",
                "monitored",
                "returned",
                "deregistered",
                name="household_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            server_default="registered",
            nullable=False,
        ),
        sa.Column("food_clothing", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("compulsory_education", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("basic_medical", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("safe_housing", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("safe_drinking_water", sa.Boolean(), server_default="false", nullable=False),
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
        sa.CheckConstraint(
            "cardinality(other_causes) <= 2", name=op.f("ck_households_at_most_two_other_causes")
        ),
        sa.ForeignKeyConstraint(
            ["village_code"], ["regions.code"], name=op.f("fk_households_village_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_households")),
    )
    op.create_index(
        "ix_households_county_code_village_code",
        "households",
        ["county_code", "village_code"],
        unique=False,
    )
    op.create_table(
        "service_sites",
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("village_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "rural_taobao",
                "postal",
                "supply_marketing",
                name="site_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
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
            ["village_code"], ["regions.code"], name=op.f("fk_service_sites_village_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_sites")),
    )
    op.create_index(
        op.f("ix_service_sites_county_code"), "service_sites", ["county_code"], unique=False
    )
    op.create_index(
        "ix_service_sites_village_code", "service_sites", ["village_code"], unique=False
    )
    op.create_table(
        "cooperative_members",
        sa.Column("cooperative_id", sa.Uuid(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("joined_on", sa.Date(), nullable=False),
        sa.Column("left_on", sa.Date(), nullable=True),
        sa.Column("linkages", sa.ARRAY(sa.String(length=20)), server_default="{}", nullable=False),
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
            name=op.f("fk_cooperative_members_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_cooperative_members_household_id_households"),
        ),
        sa.PrimaryKeyConstraint(
            "cooperative_id", "household_id", name=op.f("pk_cooperative_members")
        ),
    )
    op.create_index(
        "ix_cooperative_members_household_id", "cooperative_members", ["household_id"], unique=False
    )
    op.create_table(
        "household_cadres",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("unit", sa.String(length=200), nullable=True),
        sa.Column("level", sa.String(length=40), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_household_cadres_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_cadres")),
    )
    op.create_index(
        op.f("ix_household_cadres_household_id"), "household_cadres", ["household_id"], unique=False
    )
    op.create_table(
        "household_members",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id_number_hash", sa.CHAR(length=64), nullable=True),
        sa.Column("id_number_last4", sa.CHAR(length=4), nullable=True),
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column(
            "sex",
            sa.Enum(
                "male", "female", name="sex", native_enum=False, create_constraint=True, length=24
            ),
            nullable=False,
        ),
        sa.Column(
            "relation",
            sa.Enum(
                "head",
                "spouse",
                "child",
                "child_in_law",
                "grandchild",
                "parent",
                "grandparent",
                "sibling",
                "other",
                name="member_relation",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("ethnicity", sa.String(length=40), nullable=True),
        sa.Column(
            "education",
            sa.Enum(
                "none",
                "preschool",
                "primary",
                "junior_secondary",
                "senior_secondary",
                "vocational",
                "college",
                name="education_level",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("in_school", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "health",
            sa.Enum(
                "healthy",
                "chronic_illness",
                "serious_illness",
                "disabled",
                name="health_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "labour",
            sa.Enum(
                "ordinary",
                "skilled",
                "lost",
                "none",
                name="labour_capacity",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("migrant_work_months", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("medical_insurance", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("pension_insurance", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("allowance", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "migrant_work_months BETWEEN 0 AND 12",
            name=op.f("ck_household_members_migrant_months_range"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_household_members_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_members")),
        sa.UniqueConstraint("id_number_hash", name=op.f("uq_household_members_id_number_hash")),
    )
    op.create_index(
        op.f("ix_household_members_household_id"),
        "household_members",
        ["household_id"],
        unique=False,
    )
    op.create_table(
        "household_incomes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "wage",
                "operating",
                "transfer",
                "property",
                "production_cost",
                name="income_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), server_default="CNY", nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_by", sa.Uuid(), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "amount_fen >= 0", name=op.f("ck_household_incomes_amount_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_household_incomes_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_household_incomes_recorded_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_incomes")),
    )
    op.create_index(
        "ix_household_incomes_household_id_year",
        "household_incomes",
        ["household_id", "year"],
        unique=False,
    )
    op.create_table(
        "household_status_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_household_status_changes_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_household_status_changes_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_status_changes")),
    )
    op.create_index(
        op.f("ix_household_status_changes_household_id"),
        "household_status_changes",
        ["household_id"],
        unique=False,
    )
    op.create_table(
        "products",
        sa.Column("cooperative_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), server_default="CNY", nullable=False),
        sa.Column("stock", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sold_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("image_urls", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("origin_village_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "active",
                "archived",
                name="product_status",
                native_enum=False,
                create_constraint=True,
                length=10,
            ),
            server_default="draft",
            nullable=False,
        ),
        sa.Column(
            "cooperative_active",
            sa.Boolean(),
            server_default="true",
            nullable=False,
            comment="Copy of the cooperative's status, so that listing needs no join to filter.",
        ),
        sa.Column("certificate_number", sa.String(length=64), nullable=True),
        sa.Column("certificate_issuer", sa.String(length=200), nullable=True),
        sa.Column("certificate_valid_until", sa.Date(), nullable=True),
        sa.Column("certified_by", sa.Uuid(), nullable=True),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "search_terms",
            sa.ARRAY(sa.Text()),
            sa.Computed("search_grams(title || ' ' || description)", persisted=True),
            nullable=False,
        ),
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
        sa.CheckConstraint("price_fen > 0", name=op.f("ck_products_price_positive")),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_products_stock_not_negative")),
        sa.ForeignKeyConstraint(
            ["certified_by"], ["users.id"], name=op.f("fk_products_certified_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["cooperative_id"],
            ["cooperatives.id"],
            name=op.f("fk_products_cooperative_id_cooperatives"),
        ),
        sa.ForeignKeyConstraint(
            ["origin_village_code"],
            ["regions.code"],
            name=op.f("fk_products_origin_village_code_regions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    op.create_index(
        "ix_products_active_best_selling",
        "products",
        [sa.literal_column("sold_count DESC"), sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.create_index(
        "ix_products_active_newest",
        "products",
        [sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.create_index(
        "ix_products_active_origin",
        "products",
        ["origin_village_code"],
        unique=False,
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.create_index(
        "ix_products_active_price",
        "products",
        ["price_fen", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.create_index("ix_products_cooperative_id", "products", ["cooperative_id"], unique=False)
    op.create_index(
        "ix_products_search_terms",
        "products",
        ["search_terms"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "supply_share_sets",
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("county_code", sa.CHAR(length=12), nullable=False),
        sa.Column(
            "effective_from",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_supply_share_sets_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_supply_share_sets_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supply_share_sets")),
    )
    op.create_index(
        "ix_supply_share_sets_product_effective",
        "supply_share_sets",
        ["product_id", sa.literal_column("effective_from DESC")],
        unique=False,
    )
    op.create_table(
        "supply_share_entries",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("basis_points", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "basis_points BETWEEN 1 AND 10000",
            name=op.f("ck_supply_share_entries_basis_points_range"),
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_supply_share_entries_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["supply_share_sets.id"],
            name=op.f("fk_supply_share_entries_set_id_supply_share_sets"),
        ),
        sa.PrimaryKeyConstraint("set_id", "household_id", name=op.f("pk_supply_share_entries")),
    )
    op.create_foreign_key(
        op.f("fk_users_site_id_service_sites"), "users", "service_sites", ["site_id"], ["id"]
    )
    op.create_foreign_key(
        op.f("fk_users_cooperative_id_cooperatives"),
        "users",
        "cooperatives",
        ["cooperative_id"],
        ["id"],
    )
    op.create_foreign_key(
        op.f("fk_users_county_code_regions"), "users", "regions", ["county_code"], ["code"]
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_users_county_code_regions"), "users", type_="foreignkey")
    op.drop_constraint(op.f("fk_users_cooperative_id_cooperatives"), "users", type_="foreignkey")
    op.drop_constraint(op.f("fk_users_site_id_service_sites"), "users", type_="foreignkey")
    op.drop_table("supply_share_entries")
    op.drop_index("ix_supply_share_sets_product_effective", table_name="supply_share_sets")
    op.drop_table("supply_share_sets")
    op.drop_index("ix_products_search_terms", table_name="products", postgresql_using="gin")
    op.drop_index("ix_products_cooperative_id", table_name="products")
    op.drop_index(
        "ix_products_active_price",
        table_name="products",
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.drop_index(
        "ix_products_active_origin",
        table_name="products",
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.drop_index(
        "ix_products_active_newest",
        table_name="products",
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.drop_index(
        "ix_products_active_best_selling",
        table_name="products",
        postgresql_where=sa.text("status = 'active' AND cooperative_active"),
    )
    op.drop_table("products")
    op.drop_index(
        op.f("ix_household_status_changes_household_id"), table_name="household_status_changes"
    )
    op.drop_table("household_status_changes")
    op.drop_index("ix_household_incomes_household_id_year", table_name="household_incomes")
    op.drop_table("household_incomes")
    op.drop_index(op.f("ix_household_members_household_id"), table_name="household_members")
    op.drop_table("household_members")
    op.drop_index(op.f("ix_household_cadres_household_id"), table_name="household_cadres")
    op.drop_table("household_cadres")
    op.drop_index("ix_cooperative_members_household_id", table_name="cooperative_members")
    op.drop_table("cooperative_members")
    op.drop_index("ix_service_sites_village_code", table_name="service_sites")
    op.drop_index(op.f("ix_service_sites_county_code"), table_name="service_sites")
    op.drop_table("service_sites")
    op.drop_index("ix_households_county_code_village_code", table_name="households")
    op.drop_table("households")
    op.drop_index(op.f("ix_cooperatives_village_code"), table_name="cooperatives")
    op.drop_index(op.f("ix_cooperatives_county_code"), table_name="cooperatives")
    op.drop_table("cooperatives")
    op.drop_index("ix_regions_parent_code", table_name="regions")
    op.drop_table("regions")
    op.drop_index(op.f("ix_audit_events_subject_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_actor_id"), table_name="audit_events")
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION search_query_grams(text)")
    op.execute("DROP FUNCTION search_grams(text)")
