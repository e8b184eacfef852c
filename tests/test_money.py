"""Largest-remainder allocation and fees: exact to the fen, deterministic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.money import allocate, fee

weights = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12).filter(
    lambda ws: sum(ws) > 0
)


@given(total=st.integers(min_value=0, max_value=10**12), ws=weights)
def test_parts_add_up_exactly_and_stay_within_one_fen_of_the_exact_share(total, ws):
    parts = allocate(total, ws)
    assert sum(parts) == total
    weight_sum = sum(ws)
    for part, w in zip(parts, ws, strict=True):
        exact_floor = total * w // weight_sum
        assert exact_floor <= part <= exact_floor + 1
        if w == 0:
            assert part == 0


@given(total=st.integers(min_value=0, max_value=10**9), ws=weights)
def test_allocation_is_deterministic_and_monotone_in_weight(total, ws):
    parts = allocate(total, ws)
    assert parts == allocate(total, ws)
    for i in range(len(ws)):
        for j in range(len(ws)):
            if ws[i] > ws[j]:
                assert parts[i] >= parts[j]


def test_ties_go_to_the_earlier_position():
    assert allocate(1, [1, 1, 1]) == [1, 0, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(100, [6000, 2500, 1500]) == [60, 25, 15]
    assert allocate(10, [3333, 3333, 3334]) == [3, 3, 4]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        allocate(-1, [1])
    with pytest.raises(ValueError):
        allocate(1, [0, 0])
    with pytest.raises(ValueError):
        allocate(1, [1, -1])
    assert allocate(0, [0, 0]) == [0, 0]


@given(
    gross=st.integers(min_value=0, max_value=10**12), bp=st.integers(min_value=0, max_value=10_000)
)
def test_fee_rounds_down_and_never_exceeds_gross(gross, bp):
    charged = fee(gross, bp)
    assert 0 <= charged <= gross
    assert charged * 10_000 <= gross * bp < (charged + 1) * 10_000
