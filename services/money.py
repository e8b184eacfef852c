"""Integer money: allocation by the largest-remainder method (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` minor units in proportion to `weights`, exactly.

    Each part gets the floor of its exact share; the units left over go one by one
    to the largest remainders, ties broken by position (earlier first), so the
    result is deterministic and sums to `total`. Zero weights get nothing.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total:
            raise ValueError("cannot allocate a positive total over zero weights")
        return [0] * len(weights)
    parts = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def fee(gross: int, basis_points: int) -> int:
    """Platform fee on a gross amount, rounded down: rounding never takes from producers."""
    if not 0 <= basis_points <= 10_000:
        raise ValueError("basis points between 0 and 10000")
    return gross * basis_points // 10_000
