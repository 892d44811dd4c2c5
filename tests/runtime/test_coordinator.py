"""The coordinator's pure decision: how shards change when the universe does (collector.runtime.coordinator)."""

from __future__ import annotations

from collector.runtime.venue_shards import reassign


def test_a_delisted_symbol_leaves_its_worker_and_the_others_keep_their_order() -> None:
    shards, listed, delisted = reassign([["B", "A"], ["C", "D"]], ["A", "B", "C", "D"], ["A", "B", "D"])
    assert shards == [["B", "A"], ["D"]]
    assert listed == [] and delisted == {"C"}


def test_listings_go_to_the_least_loaded_worker_lowest_index_first() -> None:
    shards, listed, delisted = reassign([["A", "B"], ["C"], ["D"]], ["A", "B", "C", "D"],
                                        ["A", "B", "C", "D", "E", "F", "G"])
    # E: workers 2 and 3 hold one each -> worker 2; F: worker 3 now holds fewest; G: all hold two -> worker 1
    assert shards == [["A", "B", "G"], ["C", "E"], ["D", "F"]]
    assert listed == ["E", "F", "G"] and delisted == set()


def test_a_delisting_and_a_listing_at_once_refill_the_emptied_worker() -> None:
    shards, listed, delisted = reassign([["A", "B"], ["C", "D"]], ["A", "B", "C", "D"], ["A", "B", "D", "X"])
    assert shards == [["A", "B"], ["D", "X"]]
    assert listed == ["X"] and delisted == {"C"}


def test_an_unchanged_universe_changes_nothing() -> None:
    before = [["A"], ["B"]]
    assert reassign(before, ["A", "B"], ["B", "A"]) == (before, [], set())
