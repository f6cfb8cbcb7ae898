"""Outlier detection on a fake clock: ejection, growing ejection time, the cap, auto return."""

from __future__ import annotations

from gateway.events import EndpointEjected, EndpointRestored, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.host import Host
from gateway.upstream.outlier import OutlierDetector, OutlierPolicy
from tests.upstream.helpers import events_of


def detector(
    n: int = 4, **overrides: float
) -> tuple[OutlierDetector, list[Host], FakeClock, RecordingObserver, list[str]]:
    hosts = [Host(f"http://h{i}") for i in range(n)]
    clock, observer, closed = FakeClock(), RecordingObserver(), []
    policy = OutlierPolicy(
        **{"consecutive_failures": 3, "base_ejection_time": 10.0, "max_ejection_time": 35.0, **overrides}  # type: ignore[arg-type]  # test overrides
    )
    d = OutlierDetector("svc", hosts, policy, clock=clock, observer=observer, on_eject=lambda h: closed.append(h.url))
    return d, hosts, clock, observer, closed


def fail(d: OutlierDetector, host: Host, times: int) -> None:
    for _ in range(times):
        d.record(host, "connect_error")


def test_consecutive_failures_eject_and_close_connections() -> None:
    d, hosts, _, observer, closed = detector()
    fail(d, hosts[0], 2)
    d.record(hosts[0], None)  # a success breaks the streak
    fail(d, hosts[0], 2)
    assert not hosts[0].ejected
    fail(d, hosts[0], 1)
    assert hosts[0].ejected
    assert closed == ["http://h0"]
    [event] = observer.of_type(EndpointEjected)
    assert event == EndpointEjected("svc", "http://h0", 10.0, "3 consecutive failures, last connect_error")


def test_ejected_host_comes_back_by_itself() -> None:
    d, hosts, clock, observer, _ = detector()
    fail(d, hosts[1], 3)
    clock.advance(9.9)
    d.refresh()
    assert hosts[1].ejected
    clock.advance(0.1)
    d.refresh()
    assert not hosts[1].ejected
    assert observer.of_type(EndpointRestored) == [EndpointRestored("svc", "http://h1")]


def test_repeated_ejections_grow_up_to_the_cap() -> None:
    d, hosts, clock, observer, _ = detector()
    durations = []
    for _ in range(5):
        fail(d, hosts[0], 3)
        durations.append(events_of(observer, EndpointEjected)[-1].duration)
        clock.advance(durations[-1])
        d.refresh()
    assert durations == [10.0, 20.0, 30.0, 35.0, 35.0]


def test_a_long_clean_period_resets_the_growth() -> None:
    d, hosts, clock, observer, _ = detector()
    fail(d, hosts[0], 3)
    clock.advance(10.0)
    d.refresh()
    clock.advance(36.0)  # longer than max_ejection_time without trouble
    fail(d, hosts[0], 3)
    assert events_of(observer, EndpointEjected)[-1].duration == 10.0


def test_at_most_the_configured_share_is_ejected() -> None:
    d, hosts, _, _, _ = detector(n=4, max_ejection_percent=50.0)
    for host in hosts:
        fail(d, host, 3)
    assert [h.ejected for h in hosts] == [True, True, False, False]


def test_at_least_one_host_may_always_be_ejected() -> None:
    d, hosts, _, _, _ = detector(n=2, max_ejection_percent=10.0)
    fail(d, hosts[0], 3)
    fail(d, hosts[1], 3)
    assert [h.ejected for h in hosts] == [True, False]
