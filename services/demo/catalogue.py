"""Fictional products built from templates, their certificates and supply-share splits."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from services.catalog.models import ProductStatus
from services.catalog.service import MAX_BASIS_POINTS, Certificate, NewProduct, Share
from services.cooperatives.models import CooperativeKind
from services.demo.data import (
    COUNTY,
    ISSUER,
    REGION6,
    SHIPPING,
    TEMPLATES,
    TITLE_PREFIXES,
    VILLAGE_BY_NAME,
    VILLAGES,
    Organisation,
)

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# Registration authority 9 (market regulation) and the organisation type it assigns.
_USCC_PREFIX = {
    CooperativeKind.enterprise: "91",
    CooperativeKind.household_shop: "92",
    CooperativeKind.cooperative: "93",
}


def credit_code(rng: random.Random, kind: CooperativeKind) -> str:
    """A unified social credit code with a valid check character, in the demo county."""
    from stdnum.cn import uscc

    organisation_code = "MA" + "".join(rng.choice(_USCC_ALPHABET) for _ in range(7))
    body = f"{_USCC_PREFIX[kind]}{REGION6}{organisation_code}"
    return body + uscc.calc_check_digit(body)


@dataclass(frozen=True, slots=True)
class _Candidate:
    title: str
    base: str
    price_yuan: int


def _candidates(organisation: Organisation) -> list[_Candidate]:
    home = VILLAGE_BY_NAME[organisation.village].short
    found = []
    for base in organisation.templates:
        for spec, price in TEMPLATES[base].specs:
            for prefix in (home, *TITLE_PREFIXES):
                if prefix and base.startswith(prefix):
                    continue  # no "高山高山土鸡蛋"
                found.append(_Candidate(f"{prefix}{base} {spec}", base, price))
    return found


def _price_fen(rng: random.Random, yuan: int) -> int:
    value = max(5, round(yuan * rng.uniform(0.9, 1.15)))
    # Shops like prices ending in .90 or a round figure.
    return value * 100 - 10 if rng.random() < 0.6 else value * 100


def _description(rng: random.Random, organisation: Organisation, origin: str, base: str) -> str:
    template = TEMPLATES[base]
    points = rng.sample(template.selling_points, k=min(2, len(template.selling_points)))
    text = f"产自{COUNTY[1]}{origin}，{'，'.join(points)}。{rng.choice(SHIPPING)}"
    if organisation.kind is not CooperativeKind.household_shop and rng.random() < 0.5:
        text += "每笔订单按约定比例计入供货脱贫户的收入。"
    if template.english and rng.random() < 0.3:
        text += " " + rng.choice(template.english)
    return text


def _choose(
    rng: random.Random, organisation: Organisation, count: int, taken: set[str]
) -> list[_Candidate]:
    queues: dict[str, list[_Candidate]] = {base: [] for base in organisation.templates}
    for candidate in _candidates(organisation):
        if candidate.title not in taken:
            queues[candidate.base].append(candidate)
    for queue in queues.values():
        rng.shuffle(queue)
    # Take from each template in turn, so that every one is listed before any repeats.
    chosen: list[_Candidate] = []
    while len(chosen) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    if len(chosen) < count:
        raise ValueError(f"{organisation.name} has templates for only {len(chosen)} products")
    taken.update(c.title for c in chosen)
    return chosen


def make_products(
    rng: random.Random, organisation: Organisation, count: int, taken: set[str]
) -> list[NewProduct]:
    """`count` products with titles not yet in `taken`, which is updated."""
    products = []
    for candidate in _choose(rng, organisation, count, taken):
        template = TEMPLATES[candidate.base]
        origin = organisation.village
        if organisation.kind is CooperativeKind.enterprise and rng.random() < 0.4:
            origin = rng.choice(VILLAGES).name  # a firm buys across the county
        zero_stock = rng.random() < 0.08
        high = 40 if template.category == "handicraft" else 600
        products.append(
            NewProduct(
                title=candidate.title,
                category=template.category,
                unit=template.unit,
                price_fen=_price_fen(rng, candidate.price_yuan),
                description=_description(rng, organisation, origin, candidate.base),
                stock=0 if zero_stock else rng.randint(5, high),
                origin_village_code=VILLAGE_BY_NAME[origin].code,
                status=ProductStatus.draft if rng.random() < 0.08 else ProductStatus.active,
            )
        )
    return products


def make_certificate(rng: random.Random, serial: int, today: date, *, expired: bool) -> Certificate:
    if expired:
        valid_until = today - timedelta(days=rng.randint(20, 300))
    else:
        valid_until = today + timedelta(days=rng.randint(60, 900))
    # Certificates run three years here (a local choice: the national rule sets no length).
    issued = valid_until - timedelta(days=3 * 365)
    return Certificate(
        number=f"FP{REGION6}-{issued.year}-{serial:04d}", issuer=ISSUER, valid_until=valid_until
    )


def split_shares(rng: random.Random, members: list[uuid.UUID], *, most: int) -> list[Share]:
    """One to `most` supplying households; what they do not take stays with the organisation."""
    if not members:
        return []
    suppliers = rng.sample(members, k=min(len(members), rng.randint(1, most)))
    total = rng.choice((3000, 4000, 5000, 6000, 7000, 8000, MAX_BASIS_POINTS))
    # Cut the total at random points on a 100-point grid so every share is at least 100.
    steps = total // 100
    cuts = sorted(rng.sample(range(1, steps), k=len(suppliers) - 1))
    bounds = [0, *cuts, steps]
    return [
        Share(household, (high - low) * 100)
        for household, low, high in zip(suppliers, bounds[:-1], bounds[1:], strict=True)
    ]
