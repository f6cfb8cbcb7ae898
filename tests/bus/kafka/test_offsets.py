"""Ordered commits: the committable offset never passes an unfinished record, whatever the order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.bus.kafka.offsets import OffsetBook, PartitionOffsets


def test_commit_waits_for_the_oldest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.begin(offset)
    assert offsets.committable() is None  # nothing settled yet
    offsets.settle(12)
    offsets.settle(11)
    assert offsets.committable() == 10  # 10 still runs: "next to read" stays 10
    offsets.settle(10)
    assert offsets.committable() == 13


def test_commit_point_only_moves_forward() -> None:
    offsets = PartitionOffsets()
    offsets.begin(0)
    offsets.settle(0)
    assert offsets.committable() == 1
    offsets.mark_committed(1)
    assert offsets.committable() is None
    offsets.begin(1)
    assert offsets.committable() is None


def test_settling_an_unknown_or_repeated_offset_changes_nothing() -> None:
    offsets = PartitionOffsets()
    offsets.begin(5)
    assert offsets.settle(7) is False
    assert offsets.settle(5) is True
    assert offsets.settle(5) is False
    assert offsets.committable() == 6


def test_gaps_in_offsets_do_not_block_commits() -> None:
    # Compaction and transaction markers leave holes; only begun offsets count.
    offsets = PartitionOffsets()
    for offset in (3, 7, 20):
        offsets.begin(offset)
    offsets.settle(3)
    offsets.settle(7)
    assert offsets.committable() == 8
    offsets.settle(20)
    assert offsets.committable() == 21


def test_book_keeps_partitions_apart_and_forgets_revoked_ones() -> None:
    book: OffsetBook[str] = OffsetBook()
    book.begin("a", 0)
    book.begin("a", 1)
    book.begin("b", 0)
    book.settle("a", 1)
    book.settle("b", 0)
    assert book.committable() == {"a": 0, "b": 1}
    book.mark_committed({"a": 0, "b": 1})
    assert book.committable() == {}
    book.forget({"a"})
    assert book.settle("a", 0) is False  # late settle after a rebalance: ignored
    assert book.in_flight("a") == 0
    assert len(book) == 1
    assert "1 partitions" in repr(book)


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    data=st.data(),
)
def test_every_completion_order_ends_committing_one_past_the_last(gaps: list[int], data: st.DataObject) -> None:
    offsets = PartitionOffsets()
    begun = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    for offset in begun:
        offsets.begin(offset)
    order = data.draw(st.permutations(begun))
    committed: int | None = None
    for position, offset in enumerate(order):
        offsets.settle(offset)
        due = offsets.committable()
        if due is not None:
            unsettled = set(begun) - set(order[: position + 1])
            assert all(due <= u for u in unsettled)
            assert committed is None or due > committed
            offsets.mark_committed(due)
            committed = due
    assert committed == begun[-1] + 1
    assert offsets.in_flight == 0


class OffsetsMachine(RuleBasedStateMachine):
    """Begin, settle (in any order, with repeats and strays) and commit, interleaved."""

    @initialize(start=st.integers(min_value=0, max_value=1_000_000))
    def setup(self, start: int) -> None:
        self.offsets = PartitionOffsets()
        self.next = start
        self.pending: set[int] = set()
        self.settled: set[int] = set()
        self.committed: int | None = None

    @rule(gap=st.integers(min_value=1, max_value=4))
    def begin(self, gap: int) -> None:
        self.offsets.begin(self.next)
        self.pending.add(self.next)
        self.next += gap

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from(sorted(self.pending)))
        assert self.offsets.settle(offset) is True
        self.pending.discard(offset)
        self.settled.add(offset)

    @rule(data=st.data())
    def settle_stray(self, data: st.DataObject) -> None:
        stray = data.draw(st.one_of(st.sampled_from(sorted(self.settled) or [-1]), st.just(self.next + 7)))
        assert self.offsets.settle(stray) is False

    @rule()
    def commit(self) -> None:
        due = self.offsets.committable()
        if due is None:
            return
        assert self.committed is None or due > self.committed
        self.offsets.mark_committed(due)
        self.committed = due

    @invariant()
    def never_passes_an_unfinished_offset(self) -> None:
        if self.committed is not None:
            assert all(self.committed <= p for p in self.pending)

    @invariant()
    def committable_covers_everything_settled_when_idle(self) -> None:
        if not self.pending and self.settled:
            due = self.offsets.committable()
            assert (due if due is not None else self.committed) == max(self.settled) + 1

    @invariant()
    def counts_match(self) -> None:
        assert self.offsets.in_flight == len(self.pending)


OffsetsMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestOffsetsMachine = OffsetsMachine.TestCase


def test_memory_stays_bounded_behind_a_stuck_record() -> None:
    offsets = PartitionOffsets()
    offsets.begin(0)  # never settles
    for offset in range(1, 20_001):
        offsets.begin(offset)
        offsets.settle(offset)
    assert offsets.remembered < 300
    assert offsets.committable() == 0
    offsets.settle(0)
    assert offsets.committable() == 20_001
