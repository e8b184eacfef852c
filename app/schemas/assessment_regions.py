"""Village and county indicators: incidence, sales, stores and the Taobao-village test."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainSerializer

# A JSON number, rounded to 4 decimals by the database.
Percent = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]

SALES = (
    "Net e-commerce revenue recognised in the assessment year (China time) for the "
    "cooperatives of the region: the sum of every attribution-ledger entry of those "
    "cooperatives for the year, households' and cooperatives' parts alike, that is "
    "price × quantity after platform fees and refunds, in fen (CNY). Sales that a "
    "self-dealing flag keeps out of household income still count here."
)
ACTIVE_STORES = (
    "Cooperatives of the region with a paid, not cancelled order in the 30 days before `as_of`."
)
STORES = "Cooperatives registered in the region by `as_of`."


class Incidence(BaseModel):
    """Poor persons over rural population, against the exit threshold."""

    bp: int | None = Field(description="Basis points, rounded; none without a rural population.")
    percent: Percent | None = Field(description="Percentage, rounded to 4 decimals.")
    threshold_bp: int = Field(
        description="Exit needs incidence strictly below this: the year's western threshold "
        "in a western region, else the ordinary one."
    )
    western: bool
    passes_exit: bool | None = Field(
        description="Decided on the exact fraction; none without a rural population."
    )


class Criterion(BaseModel):
    figure: int | None
    threshold: int
    passes: bool


Failing = Literal["urban", "sales", "active_stores"]


class TaobaoTest(BaseModel):
    """Not urban, sales at least the figure, and enough active stores by count or by share."""

    passes: bool
    failing: list[Failing] = Field(
        description="Why it fails: an urban residents' committee, too little sales, or "
        "too few active stores both by count and by share of households."
    )
    urban: bool
    sales_fen: Criterion = Field(description="Yearly sales against the figure, in fen.")
    active_stores: Criterion = Field(description="Active stores against the count.")
    store_share_bp: Criterion = Field(
        description="Active stores per household, in basis points (rounded down), against "
        "the share; fails without households."
    )


class VillageIndicatorsOut(BaseModel):
    level: Literal["village"] = "village"
    code: str
    name: str
    county_code: str
    year: int
    as_of: datetime = Field(
        description="When stores are counted: the end of the year (China time), or now "
        "while the year runs."
    )
    households: int = Field(description="All households, poor or not; see households_source.")
    households_source: Literal["region", "file_cards"] = Field(
        description="`region`: the village's recorded household count; `file_cards`: none "
        "is recorded, so the file cards on record."
    )
    file_cards: int = Field(
        description="Cards registered by the year and not deregistered by its end."
    )
    poor_households: int = Field(
        description="Registered poor cards that were registered, exit_proposed or returned "
        "at the end of the year."
    )
    poor_persons: int = Field(description="Members of the poor households.")
    rural_population: int | None
    incidence: Incidence
    sales_fen: int = Field(description=SALES)
    stores: int = Field(description=STORES)
    active_stores: int = Field(description=ACTIVE_STORES)
    taobao: TaobaoTest

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VillageIndicatorsOut:
        return cls(
            code=row["village_code"],
            county_code=row["county_code"],
            incidence=_incidence(row),
            taobao=TaobaoTest(
                passes=row["taobao_village"],
                failing=row["taobao_failing"],
                urban=row["urban"],
                sales_fen=Criterion(
                    figure=row["sales_fen"],
                    threshold=row["taobao_sales_threshold_fen"],
                    passes=row["taobao_sales_passes"],
                ),
                active_stores=Criterion(
                    figure=row["active_stores"],
                    threshold=row["taobao_active_stores_threshold"],
                    passes=row["taobao_active_stores_passes"],
                ),
                store_share_bp=Criterion(
                    figure=row["active_store_share_bp"],
                    threshold=row["taobao_store_share_threshold_bp"],
                    passes=row["taobao_store_share_passes"],
                ),
            ),
            **_plain(row, cls),
        )


class TaobaoVillages(BaseModel):
    count: int
    codes: list[str] = Field(description="The villages that pass, by code.")


class CountyIndicatorsOut(BaseModel):
    level: Literal["county"] = "county"
    code: str
    name: str
    year: int
    as_of: datetime = Field(
        description="When stores are counted: the end of the year (China time), or now "
        "while the year runs."
    )
    households: int = Field(description="All households, poor or not; see households_source.")
    households_source: Literal["region", "villages"] = Field(
        description="`region`: the county's recorded household count; `villages`: the sum "
        "of its villages' households (each its recorded count, else its file cards)."
    )
    file_cards: int
    poor_households: int = Field(
        description="Registered poor cards that were registered, exit_proposed or returned "
        "at the end of the year."
    )
    poor_persons: int
    rural_population: int | None
    rural_population_source: Literal["region", "villages"] | None = Field(
        description="`region`: the county's own figure; `villages`: the sum of the villages "
        "that have one (see villages_without_rural_population); none: neither is recorded."
    )
    villages_without_rural_population: int
    incidence: Incidence
    villages: int
    taobao_villages: TaobaoVillages
    sales_fen: int = Field(description=SALES)
    stores: int = Field(description=STORES)
    active_stores: int = Field(description=ACTIVE_STORES)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CountyIndicatorsOut:
        return cls(
            code=row["county_code"],
            incidence=_incidence(row),
            taobao_villages=TaobaoVillages(
                count=row["taobao_villages"], codes=row["taobao_village_codes"]
            ),
            **_plain(row, cls),
        )


RegionIndicatorsOut = Annotated[
    VillageIndicatorsOut | CountyIndicatorsOut, Field(discriminator="level")
]

_NESTED = frozenset({"level", "code", "county_code", "incidence", "taobao", "taobao_villages"})


def _plain(row: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The row's columns that a field of the model takes as they are."""
    return {name: row[name] for name in model.model_fields if name not in _NESTED}


def _incidence(row: dict[str, Any]) -> Incidence:
    return Incidence(
        bp=row["incidence_bp"],
        percent=row["incidence_percent"],
        threshold_bp=row["exit_threshold_bp"],
        western=row["western"],
        passes_exit=row["passes_exit"],
    )
