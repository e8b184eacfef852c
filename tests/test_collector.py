"""The garbage collector's tunings hold while their block runs, and only then."""

from __future__ import annotations

import gc

import pytest

from app import collector


@pytest.mark.parametrize("thresholds", [collector.REQUESTS, collector.BATCHES])
def test_a_tuning_leaves_the_collector_as_it_found_it(thresholds) -> None:
    before = gc.get_threshold()
    with collector.tuned(thresholds):
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() > 0  # what was alive before is left out
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_tuning_is_undone_when_its_block_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collector.tuned(collector.REQUESTS):
        raise RuntimeError("the server stopped")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_garbage_made_inside_a_tuning_is_still_collected() -> None:
    """Reference cycles made while the collector is tuned are freed by a collection."""

    class Node:
        other: object

    with collector.tuned(collector.BATCHES):
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
