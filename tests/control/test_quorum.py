"""The quorum table (gateway/control/quorum.py) on a FakeClock: liveness, majority, explicit quorum,
peers only take out, local recovery wins over older verdicts, fallback when the channel is silent."""

from __future__ import annotations

import pytest

from gateway.control.quorum import LIVE_FOR, QuorumTable, Verdict
from gateway.testing import FakeClock

BAD = ("payments", "http://10.0.0.2:8080")
GOOD = ("payments", "http://10.0.0.1:8080")


def table(clock: FakeClock, quorum: int | None = None) -> QuorumTable:
    t = QuorumTable("me", clock=clock, quorum=quorum)
    t.heard("me", clock.time(), {})  # our heartbeat came back: the channel works
    return t


def say(t: QuorumTable, clock: FakeClock, instance: str, *down: tuple[str, str], at: float | None = None) -> None:
    since = clock.time() if at is None else at
    t.heard(instance, clock.time(), {key: Verdict(True, since) for key in down})


def test_one_sick_replica_never_takes_an_endpoint_away_from_the_others() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b")
    assert t.quorum() == 2 and t.tally(BAD).votes == 1
    assert t.to_take_out() == []
    # Two replicas (this one and one peer): the majority of two is two, so one sick peer still cannot.
    lone = table(clock)
    say(lone, clock, "a", BAD)
    assert lone.quorum() == 2 and lone.to_take_out() == []


def test_a_majority_of_live_replicas_takes_it_out_and_never_a_healthy_one() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    [(key, tally)] = t.to_take_out()
    assert key == BAD and (tally.votes, tally.quorum, tally.live) == (2, 2, 3)
    assert not t.tally(GOOD).down


def test_own_down_verdict_counts_and_what_is_already_out_is_not_taken_out_again() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b")
    t.own(BAD, True, clock.time())
    assert t.tally(BAD).down  # a and this replica: 2 of 3
    assert t.to_take_out() == []  # out already, by this replica's own decision


def test_replicas_silent_for_30_s_are_not_live_and_their_verdicts_stop_counting() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    say(t, clock, "c")
    say(t, clock, "d")
    assert t.quorum() == 3 and t.to_take_out() == []  # 2 of 5 live
    clock.advance(LIVE_FOR - 1)
    t.heard("me", clock.time(), {})
    say(t, clock, "a", BAD, at=clock.time() - LIVE_FOR)  # a and b keep talking, c and d fall silent
    say(t, clock, "b", BAD, at=clock.time() - LIVE_FOR)
    clock.advance(2)
    t.heard("me", clock.time(), {})
    assert t.live_peers() == ["a", "b"] and t.quorum() == 2
    assert [key for key, _ in t.to_take_out()] == [BAD]
    clock.advance(LIVE_FOR + 1)
    t.heard("me", clock.time(), {})
    assert t.live_peers() == [] and t.to_take_out() == []
    t.forget_dead()
    assert "0 live peers" in repr(t)


def test_an_explicit_quorum_overrides_the_majority() -> None:
    clock = FakeClock()
    t = table(clock, quorum=3)
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    say(t, clock, "c")
    say(t, clock, "d")
    assert t.quorum() == 3 and t.to_take_out() == []  # 2 votes of 5, and 3 needed
    say(t, clock, "c", BAD)
    assert [key for key, _ in t.to_take_out()] == [BAD]


def test_a_quorum_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        QuorumTable("me", clock=FakeClock(), quorum=1)


def test_local_recovery_wins_over_older_peer_verdicts_but_not_newer_ones() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    assert t.to_take_out()
    clock.advance(10)
    t.heard("me", clock.time(), {})
    t.recovered(BAD, clock.time())  # this replica's half-open probes passed: it is back, locally
    say(t, clock, "a", BAD, at=clock.time() - 10)  # heartbeats repeat the old verdicts
    say(t, clock, "b", BAD, at=clock.time() - 10)
    assert t.tally(BAD).votes == 0 and t.to_take_out() == []
    clock.advance(1)
    say(t, clock, "a", BAD)  # a tripped again after our recovery, and b too: out again
    say(t, clock, "b", BAD)
    assert [key for key, _ in t.to_take_out()] == [BAD]


def test_peers_only_take_out_an_up_verdict_never_forces_anything_in() -> None:
    clock = FakeClock()
    t = table(clock)
    t.own(BAD, True, clock.time())
    t.heard("a", clock.time(), {BAD: Verdict(False, clock.time())})
    t.heard("b", clock.time(), {BAD: Verdict(False, clock.time())})
    assert t.to_take_out() == []  # nothing to put back: only local probes do that
    assert t.own_verdicts()[BAD].down  # and this replica's own verdict stands


def test_an_older_notice_from_a_replica_is_ignored() -> None:
    clock = FakeClock()
    t = table(clock)
    assert t.heard("a", clock.time(), {BAD: Verdict(True, clock.time())})
    assert not t.heard("a", clock.time() - 5, {})  # replayed or reordered: the latest stands
    say(t, clock, "b", BAD)
    assert [key for key, _ in t.to_take_out()] == [BAD]


def test_silence_of_the_control_channel_falls_back_to_local_decisions() -> None:
    clock = FakeClock()
    t = table(clock)
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    assert not t.degraded and t.to_take_out()
    clock.advance(16)  # three heartbeats (5 s) without our own coming back
    say(t, clock, "a", BAD)
    say(t, clock, "b", BAD)
    assert t.degraded and t.to_take_out() == []
    t.heard("me", clock.time(), {})
    assert not t.degraded
    t.publish_failed(True)
    assert t.degraded and t.to_take_out() == [] and "degraded" in repr(t)


def test_own_verdicts_change_only_on_a_change_and_are_published_down_first() -> None:
    clock = FakeClock()
    t = table(clock)
    assert t.own(GOOD, False, clock.time())
    assert t.own(BAD, True, clock.time())
    assert not t.own(BAD, True, clock.time() + 1)  # the same verdict again: not a change
    assert list(t.own_verdicts()) == [BAD, GOOD]
    assert t.own_verdicts()[BAD].since == clock.time()
