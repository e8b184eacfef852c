"""Alkire–Foster multidimensional poverty: the indicator catalogue and a region's measures.

Every figure comes twice: a JSON number rounded to 6 places, and `<name>_exact`,
the exact fraction as a string ("5/36"), from which nothing is lost.
"""

from __future__ import annotations

from fractions import Fraction

from pydantic import BaseModel, Field

from services.assessment.mpi import CATALOGUE, Dimension, Indicator, IndicatorName, Measures

PLACES = 6

CATALOGUE_DOC = "\n".join(
    f"- `{i.name}` ({i.dimension}, default weight {i.default_weight}): {i.rule}"
    for i in CATALOGUE.values()
)


def rounded(value: Fraction) -> float:
    return float(round(value, PLACES))


class IndicatorOut(BaseModel):
    name: IndicatorName
    dimension: Dimension
    rule: str = Field(description="When a household, and so each of its members, is deprived.")
    default_weight: float
    default_weight_exact: str

    @classmethod
    def of(cls, indicator: Indicator) -> IndicatorOut:
        return cls(
            name=indicator.name,
            dimension=indicator.dimension,
            rule=indicator.rule,
            default_weight=rounded(indicator.default_weight),
            default_weight_exact=str(indicator.default_weight),
        )


class IndicatorMeasureOut(BaseModel):
    name: IndicatorName
    dimension: Dimension
    rule: str
    weight: float
    weight_exact: str
    uncensored_headcount: float = Field(description="Share of persons deprived in it.")
    uncensored_headcount_exact: str
    censored_headcount: float = Field(
        description="h_j(k): share of persons who are poor and deprived in it."
    )
    censored_headcount_exact: str
    contribution: float = Field(
        description="w_j h_j(k) / M0: its share of M0 (×100 for a percentage); the "
        "contributions sum to 1 when M0 > 0, and are 0 when nobody is poor."
    )
    contribution_exact: str


class MpiOut(BaseModel):
    region: str
    year: int
    k: float = Field(description="The poverty cutoff: poor when the score c ≥ k.")
    k_exact: str
    households: int = Field(description="Households counted (with members, not deregistered).")
    poor_households: int
    n: int = Field(description="Persons counted.")
    q: int = Field(description="Poor persons.")
    H: float = Field(description="Headcount ratio q / n.")
    H_exact: str
    A: float = Field(description="Intensity: the average score of the poor.")
    A_exact: str
    M0: float = Field(description="Adjusted headcount ratio H × A.")
    M0_exact: str
    vulnerable: float = Field(description="Share of persons with 1/5 ≤ c < k.")
    vulnerable_exact: str
    severe: float = Field(description="Share of persons poor with c ≥ 1/2.")
    severe_exact: str
    indicators: list[IndicatorMeasureOut]

    @classmethod
    def of(cls, region: str, year: int, m: Measures) -> MpiOut:
        return cls(
            region=region,
            year=year,
            k=rounded(m.cutoff),
            k_exact=str(m.cutoff),
            households=m.households,
            poor_households=m.poor_households,
            n=m.persons,
            q=m.poor,
            H=rounded(m.headcount),
            H_exact=str(m.headcount),
            A=rounded(m.intensity),
            A_exact=str(m.intensity),
            M0=rounded(m.adjusted_headcount),
            M0_exact=str(m.adjusted_headcount),
            vulnerable=rounded(m.vulnerable),
            vulnerable_exact=str(m.vulnerable),
            severe=rounded(m.severe),
            severe_exact=str(m.severe),
            indicators=[
                IndicatorMeasureOut(
                    name=i.indicator.name,
                    dimension=i.indicator.dimension,
                    rule=i.indicator.rule,
                    weight=rounded(i.weight),
                    weight_exact=str(i.weight),
                    uncensored_headcount=rounded(i.uncensored),
                    uncensored_headcount_exact=str(i.uncensored),
                    censored_headcount=rounded(i.censored),
                    censored_headcount_exact=str(i.censored),
                    contribution=rounded(i.contribution),
                    contribution_exact=str(i.contribution),
                )
                for i in m.indicators
            ],
        )
