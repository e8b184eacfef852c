"""Fictional file cards: households and their members, paired cadres, recorded incomes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date

from services.demo.data import (
    CADRE_UNITS,
    ETHNICITIES,
    ETHNICITY_WEIGHTS,
    GIVEN_FEMALE_OLDER,
    GIVEN_FEMALE_YOUNG,
    GIVEN_MALE_OLDER,
    GIVEN_MALE_YOUNG,
    SURNAMES,
    Village,
)
from services.households.ids import make_id_number
from services.households.models import (
    Cause,
    Education,
    Health,
    HouseholdType,
    IncomeKind,
    Labour,
    Relation,
    Sex,
    Standard,
)
from services.households.service import NewCadre, NewHousehold, NewIncome, NewMember


@dataclass(frozen=True, slots=True)
class DemoHousehold:
    card: NewHousehold
    cadres: tuple[NewCadre, ...]
    incomes: tuple[NewIncome, ...]


@dataclass(slots=True)
class _Person:
    relation: Relation
    sex: Sex
    age: int
    surname: str


class IdNumbers:
    """Fictional resident ID numbers, each handed out once."""

    def __init__(self, region6: str) -> None:
        self._region6 = region6
        self._next = 0
        self._issued: set[str] = set()

    def issue(self, birth: date, sex: Sex) -> str:
        while True:
            self._next += 1
            # The sequence's last digit is odd for men and even for women, as on real cards.
            if (self._next % 2 == 1) != (sex is Sex.male):
                continue
            number = make_id_number(self._region6, birth, self._next)
            if number not in self._issued:
                self._issued.add(number)
                return number


def phone(rng: random.Random) -> str:
    # No mobile network uses the 10 prefix, so these can never reach a real person.
    return "10" + "".join(rng.choice("0123456789") for _ in range(9))


def person_name(rng: random.Random, surname: str, sex: Sex, birth_year: int) -> str:
    young = birth_year >= 1990
    if sex is Sex.male:
        pool = GIVEN_MALE_YOUNG if young else GIVEN_MALE_OLDER
    else:
        pool = GIVEN_FEMALE_YOUNG if young else GIVEN_FEMALE_OLDER
    size = 2 if rng.random() < 0.7 else 1
    return surname + "".join(rng.sample(pool, size))


def _other_surname(rng: random.Random, avoid: str) -> str:
    return rng.choice([s for s in SURNAMES if s != avoid])


def _children(rng: random.Random, surname: str, low: int, high: int) -> list[_Person]:
    ages = sorted(
        {rng.randint(low, high) for _ in range(rng.choice((1, 1, 2, 2, 3)))}, reverse=True
    )
    return [_Person(Relation.child, rng.choice(list(Sex)), age, surname) for age in ages]


def _shape(rng: random.Random, surname: str) -> list[_Person]:
    """Who lives together: the usual mixes of a poor rural household."""
    roll = rng.random()
    if roll < 0.08:  # an old person living alone
        return [_Person(Relation.head, rng.choice(list(Sex)), rng.randint(62, 86), surname)]
    if roll < 0.20:  # an old couple whose children left
        age = rng.randint(58, 80)
        return [
            _Person(Relation.head, Sex.male, age, surname),
            _Person(
                Relation.spouse, Sex.female, age - rng.randint(0, 5), _other_surname(rng, surname)
            ),
        ]
    if roll < 0.30:  # three generations with an older head, the son's family at home
        age = rng.randint(55, 68)
        son = age - rng.randint(24, 30)
        people = [
            _Person(Relation.head, Sex.male, age, surname),
            _Person(
                Relation.spouse, Sex.female, age - rng.randint(0, 4), _other_surname(rng, surname)
            ),
            _Person(Relation.child, Sex.male, son, surname),
            _Person(
                Relation.child_in_law,
                Sex.female,
                son - rng.randint(0, 3),
                _other_surname(rng, surname),
            ),
        ]
        people += [
            _Person(Relation.grandchild, p.sex, p.age, surname)
            for p in _children(rng, surname, 1, max(1, son - 22))
        ]
        return people
    age = rng.randint(29, 52)
    # Now and then a widowed or left-behind mother heads the household alone.
    single_mother = rng.random() < 0.08
    people = [_Person(Relation.head, Sex.female if single_mother else Sex.male, age, surname)]
    if not single_mother:
        people.append(
            _Person(
                Relation.spouse, Sex.female, age - rng.randint(0, 4), _other_surname(rng, surname)
            )
        )
    people += _children(rng, surname, 1, max(1, min(age - 20, 24)))
    if roll >= 0.65:  # the head's parents live with them
        father = age + rng.randint(22, 30)
        if father <= 88 and rng.random() < 0.6:
            people.append(_Person(Relation.parent, Sex.male, father, surname))
        people.append(
            _Person(
                Relation.parent,
                Sex.female,
                min(father - rng.randint(0, 4), 90),
                _other_surname(rng, surname),
            )
        )
    return people


def _education(rng: random.Random, age: int) -> tuple[Education, bool]:
    if age < 3:
        return Education.none, False
    if age < 6:
        return Education.preschool, rng.random() < 0.8
    if age < 12:
        return Education.primary, True
    if age < 15:
        # A few drop out of compulsory school: the guarantee indicator then fails.
        return Education.junior_secondary, rng.random() < 0.97
    if age < 18:
        if rng.random() < 0.8:
            return rng.choice((Education.senior_secondary, Education.vocational)), True
        return Education.junior_secondary, False
    if age < 23:
        roll = rng.random()
        if roll < 0.25:
            return Education.college, True
        if roll < 0.45:
            return Education.vocational, rng.random() < 0.5
        return rng.choice((Education.senior_secondary, Education.junior_secondary)), False
    options = {
        "young": (
            (Education.junior_secondary, 50),
            (Education.primary, 25),
            (Education.senior_secondary, 15),
            (Education.vocational, 7),
            (Education.college, 3),
        ),
        "middle": (
            (Education.primary, 45),
            (Education.junior_secondary, 35),
            (Education.none, 15),
            (Education.senior_secondary, 5),
        ),
        "old": ((Education.none, 45), (Education.primary, 45), (Education.junior_secondary, 10)),
    }["young" if age < 46 else "middle" if age < 61 else "old"]
    levels, weights = zip(*options, strict=True)
    return rng.choices(levels, weights)[0], False


def _health(rng: random.Random, age: int) -> Health:
    weights = (92, 5, 1.5, 1.5) if age < 50 else (70, 22, 4, 4) if age < 65 else (45, 42, 7, 6)
    return rng.choices(list(Health), weights)[0]


def _labour(rng: random.Random, age: int, health: Health, in_school: bool) -> Labour:
    if age < 16 or in_school:
        return Labour.none
    if health in (Health.serious_illness, Health.disabled):
        return Labour.lost if rng.random() < 0.7 else Labour.ordinary
    if age >= 70:
        return Labour.none if rng.random() < 0.8 else Labour.lost
    if age >= 60:
        return rng.choices((Labour.ordinary, Labour.lost, Labour.none), (40, 20, 40))[0]
    if health is Health.chronic_illness:
        return Labour.ordinary
    return Labour.skilled if rng.random() < 0.25 else Labour.ordinary


def _causes(
    rng: random.Random, members: list[NewMember], ages: list[int]
) -> tuple[Cause, list[Cause]]:
    """Main and other causes, weighted by what the members' own cards show."""
    weights = {
        Cause.illness: 8,
        Cause.disability: 2,
        Cause.education: 2,
        Cause.disaster: 3,
        Cause.land: 4,
        Cause.water: 3,
        Cause.technology: 12,
        Cause.labour: 4,
        Cause.funds: 15,
        Cause.transport: 5,
        Cause.motivation: 2,
        Cause.other: 1,
    }
    if any(m.health in (Health.chronic_illness, Health.serious_illness) for m in members):
        weights[Cause.illness] += 40
    if any(m.health is Health.disabled for m in members):
        weights[Cause.disability] += 30
    if any(m.in_school and age >= 15 for m, age in zip(members, ages, strict=True)):
        weights[Cause.education] += 20
    if not any(m.labour in (Labour.ordinary, Labour.skilled) for m in members):
        weights[Cause.labour] += 40
    causes = list(weights)
    main = rng.choices(causes, [weights[c] for c in causes])[0]
    others: list[Cause] = []
    for _ in range(rng.choice((0, 1, 1, 2))):
        rest = [c for c in causes if c != main and c not in others]
        others.append(rng.choices(rest, [weights[c] for c in rest])[0])
    return main, others


def _household_type(rng: random.Random, poor: bool, people: list[_Person]) -> HouseholdType:
    if not poor:
        return HouseholdType.ordinary
    if len(people) == 1 and people[0].age >= 60:
        return rng.choices((HouseholdType.five_guarantee, HouseholdType.minimum_living), (7, 3))[0]
    if all(p.age >= 58 for p in people):
        return rng.choices((HouseholdType.minimum_living, HouseholdType.ordinary), (5, 5))[0]
    return rng.choices(
        (HouseholdType.ordinary, HouseholdType.minimum_living, HouseholdType.allowance_poor),
        (75, 15, 10),
    )[0]


def make_household(
    rng: random.Random,
    ids: IdNumbers,
    village: Village,
    *,
    poor: bool,
    cadres: list[NewCadre],
    today: date,
) -> DemoHousehold:
    surname = rng.choice(village.clans) if rng.random() < 0.7 else rng.choice(SURNAMES)
    people = _shape(rng, surname)
    household_type = _household_type(rng, poor, people)
    on_allowance = household_type in (HouseholdType.minimum_living, HouseholdType.five_guarantee)
    ethnicity = rng.choices(ETHNICITIES, ETHNICITY_WEIGHTS)[0]
    members: list[NewMember] = []
    for person in people:
        birth = date(today.year - person.age, rng.randint(1, 12), rng.randint(1, 28))
        education, in_school = _education(rng, person.age)
        health = _health(rng, person.age)
        labour = _labour(rng, person.age, health, in_school)
        adult = person.age >= 16 and not in_school
        working_age = 18 <= person.age <= 55 and labour in (Labour.ordinary, Labour.skilled)
        members.append(
            NewMember(
                name=person_name(rng, person.surname, person.sex, birth.year),
                sex=person.sex,
                relation=person.relation,
                education=education,
                health=health,
                labour=labour,
                id_number=ids.issue(birth, person.sex),
                ethnicity=ethnicity
                if rng.random() < 0.9
                else rng.choices(ETHNICITIES, ETHNICITY_WEIGHTS)[0],
                in_school=in_school,
                migrant_work_months=rng.randint(3, 11) if working_age and rng.random() < 0.4 else 0,
                medical_insurance=rng.random() < 0.99,
                pension_insurance=adult and rng.random() < 0.85,
                allowance=on_allowance or rng.random() < 0.03,
            )
        )
    ages = [p.age for p in people]
    main, others = _causes(rng, members, ages)
    school_age_out = any(
        6 <= age <= 15 and not m.in_school for m, age in zip(members, ages, strict=True)
    )
    registration_year = rng.choices(range(2014, 2020), (45, 20, 15, 10, 6, 4))[0]
    card = NewHousehold(
        village_code=village.code,
        household_type=household_type,
        standard=rng.choices(list(Standard), (85, 12, 3))[0],
        main_cause=main,
        other_causes=others,
        registration_year=registration_year,
        members=members,
        address=f"{village.township}{village.name}{rng.randint(1, village.groups)}组",
        phone=phone(rng) if rng.random() < 0.8 else None,
        poor=poor,
        food_clothing=rng.random() < 0.98,
        compulsory_education=not school_age_out,
        basic_medical=all(m.medical_insurance for m in members),
        safe_housing=rng.random() < 0.93,
        safe_drinking_water=rng.random() < 0.93,
    )
    paired: tuple[NewCadre, ...] = ()
    if poor:
        first = rng.choice(cadres)
        start = date(max(registration_year, 2015), rng.randint(1, 12), rng.randint(1, 28))
        paired = (_cadre_from(first, start),)
        # Cadres rotate: a replacement is a new row, the first one stays on the card.
        if rng.random() < 0.15 and start.year < 2020:
            later = date(rng.randint(start.year + 1, 2020), rng.randint(1, 12), rng.randint(1, 28))
            paired += (_cadre_from(rng.choice(cadres), later),)
    return DemoHousehold(card, paired, _incomes(rng, members, today))


def _cadre_from(template: NewCadre, start: date) -> NewCadre:
    return NewCadre(
        name=template.name,
        start_date=start,
        unit=template.unit,
        level=template.level,
        phone=template.phone,
    )


def cadre_pool(rng: random.Random, size: int) -> list[NewCadre]:
    """Cadres each paired with several households; start dates are set per household."""
    pool = []
    for _ in range(size):
        sex = rng.choice(list(Sex))
        unit, level = rng.choice(CADRE_UNITS)
        pool.append(
            NewCadre(
                name=person_name(rng, rng.choice(SURNAMES), sex, rng.randint(1965, 1995)),
                start_date=date(2015, 1, 1),
                unit=unit,
                level=level,
                phone=phone(rng),
            )
        )
    return pool


def _incomes(rng: random.Random, members: list[NewMember], today: date) -> tuple[NewIncome, ...]:
    # Officers record other income for some households only, mostly for last year.
    if rng.random() >= 0.4:
        return ()
    migrant_months = sum(m.migrant_work_months for m in members)
    incomes: list[NewIncome] = []
    years = (today.year - 2, today.year - 1) if rng.random() < 0.5 else (today.year - 1,)
    for year in years:
        if migrant_months:
            monthly = rng.randint(1800, 3200)
            incomes.append(
                NewIncome(year, IncomeKind.wage, migrant_months * monthly * 100, "外出务工")
            )
        if any(m.allowance for m in members):
            incomes.append(
                NewIncome(
                    year, IncomeKind.transfer, rng.randint(1500, 4800) * 100, "低保及各类补贴"
                )
            )
        elif rng.random() < 0.5:
            incomes.append(
                NewIncome(
                    year, IncomeKind.transfer, rng.randint(300, 1500) * 100, "生态补偿、养老金"
                )
            )
        if rng.random() < 0.7:
            operating = rng.randint(1000, 6000) * 100
            incomes.append(NewIncome(year, IncomeKind.operating, operating, "种养殖"))
            cost = operating * rng.randint(20, 40) // 100
            incomes.append(NewIncome(year, IncomeKind.production_cost, cost, "种苗、饲料、化肥"))
        if rng.random() < 0.25:
            incomes.append(
                NewIncome(year, IncomeKind.property, rng.randint(300, 1500) * 100, "土地流转租金")
            )
    return tuple(incomes)
