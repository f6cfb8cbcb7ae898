"""Shared outlier knowledge with a quorum (issue 11, section 4): the I/O around gateway/control/quorum.py.

``SharedHealth`` is three things of one replica:

- an ``Observer`` of its own events: its breaker opening, its outlier detector ejecting, its health
  checks failing are its own ``down`` verdicts; closing, restoring, passing again put them back (and
  mark a local recovery). A take-out it performs because of its peers is not a verdict of its own and
  is never published, or verdicts would become self-fulfilling;
- a publisher of ``health.verdicts`` notices on every control channel: on every change of its own
  verdicts and as a heartbeat (every ``HEARTBEAT`` s, with all of them), so peers know who is live;
- the reader of its peers' notices (the control responder hands them over by the ``x-cmn-notice``
  header). A notice changes state, so it must be proven: its sender is identified as commands are (the
  broker-validated AMQP ``user_id``, or an ``x-cmn-signature`` by a key of ``security.keys``:
  CONTROL_KEY_ID names the one this gateway signs with) and must be in CONTROL_PRINCIPALS. A refused
  notice is a ``security.*`` event; nothing a sender writes stops the reader.

When the quorum says an endpoint is down and this replica still uses it, the forwarder takes it out
(``GatewayForwarder.take_out``: the breaker trips open, or the outlier detector ejects it); the way
back is always local. When the control channel goes silent, the replica falls back to local
decisions, loudly: ``cmn_shared_health_degraded`` and one warning line per transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence

import structlog
from pydantic import ValidationError

from gateway.access.identity import MAX_CLOCK_SKEW, Caller, Identifier, Proof
from gateway.bus.base import ControlChannel, Delivery
from gateway.clock import Clock
from gateway.control.gather import Signer
from gateway.control.quorum import HEARTBEAT, LIVE_FOR, Key, QuorumTable, Tally, Verdict
from gateway.control.status import _signer
from gateway.envelope.health import (
    HEALTH_VERDICTS,
    MAX_NOTICE_BYTES,
    MAX_VERDICTS,
    NOTICE_HEADER,
    VerdictsNotice,
    parse_verdicts,
)
from gateway.envelope.health import Verdict as WireVerdict
from gateway.errors import ConfigError, GatewayError
from gateway.events import (
    BreakerStateChanged,
    EndpointEjected,
    EndpointHealthChanged,
    EndpointRestored,
    EndpointTakenOut,
    Event,
    Observer,
    SecurityRefused,
    SharedHealthChanged,
)
from gateway.settings import Settings, principals

log = structlog.get_logger("cmn.shared_health")

TakeOut = Callable[[str, str, str], bool]
"""``GatewayForwarder.take_out(upstream, endpoint, reason)``."""
Identify = Callable[[Proof], Caller]
"""``Identifier.identify``: who sent a notice (raises a GatewayError when the proof fails)."""

LOG_EVERY = 100  # refusals of one kind from one sender logged after the first


class SharedHealth:
    def __init__(
        self,
        table: QuorumTable,
        *,
        fleet: str,
        take_out: TakeOut,
        identify: Identify,
        principals: Collection[str],
        observer: Observer,
        clock: Clock,
        heartbeat: float = HEARTBEAT,
        signer: Signer | None = None,
    ) -> None:
        self.table = table
        self._fleet = fleet
        self._take_out = take_out
        self._identify = identify
        self._principals = frozenset(principals)
        self._observer = observer
        self._clock = clock
        self._heartbeat = heartbeat
        self._signer = signer
        self._channels: list[ControlChannel] = []
        self._down: dict[Key, set[str]] = {}  # which of this replica's own parts say each endpoint is down
        self._taking_out: Key | None = None  # set while a quorum take-out runs: its events are not ours
        self._dirty = False
        self._publishing: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None
        self._reported: tuple[bool, int] | None = None  # (degraded, live peers) last reported
        self._sent: deque[str] = deque(maxlen=16)  # correlation ids of our latest notices, to know our own
        self._refusals: Counter[tuple[str, str | None]] = Counter()  # (kind, principal) -> refused
        self._own_refused = 0  # our own notices, refused: CONTROL_PRINCIPALS lacks this gateway
        self.refused = 0
        self.taken_out = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, channels: Sequence[ControlChannel]) -> None:
        """Publish on ``channels`` (started by their responders), beating every ``heartbeat`` s."""
        self._channels = list(channels)
        self._beating = asyncio.get_running_loop().create_task(self._beat(), name="shared-health")

    async def aclose(self) -> None:
        for task in (self._beating, self._publishing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._beating = self._publishing = None

    async def _beat(self) -> None:
        while True:
            self._publish_soon()
            await self._clock.sleep(self._heartbeat)
            self.table.forget_dead()
            self._apply()
            self._report()

    # -- own verdicts --------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        match event:
            case BreakerStateChanged(upstream=u, endpoint=e, new="open"):
                self._own((u, e), "breaker", down=True)
            case BreakerStateChanged(upstream=u, endpoint=e, new="closed"):
                self._own((u, e), "breaker", down=False)
            case EndpointEjected(upstream=u, endpoint=e):
                self._own((u, e), "outlier", down=True)
            case EndpointRestored(upstream=u, endpoint=e):
                self._own((u, e), "outlier", down=False)
            case EndpointHealthChanged(upstream=u, endpoint=e, healthy=healthy):
                self._own((u, e), "health", down=not healthy)
            case _:
                return

    def _own(self, key: Key, source: str, *, down: bool) -> None:
        if key == self._taking_out:
            return  # the peers' decision, carried out here: not a verdict of this replica
        sources = self._down.setdefault(key, set())
        now = self._clock.time()
        if down:
            sources.add(source)
        else:
            sources.discard(source)
            self.table.recovered(key, now)  # a local probe, expiry or check put it back
        if self.table.own(key, bool(sources), now):
            self._publish_soon()

    # -- publishing ----------------------------------------------------------------------------
    def notice(self) -> VerdictsNotice:
        """This replica's verdicts as a notice: down ones first, as many as the bounds allow."""
        verdicts = [
            WireVerdict(upstream=u, endpoint=e, down=v.down, since=v.since)
            for (u, e), v in self.table.own_verdicts().items()
        ][:MAX_VERDICTS]
        while True:
            notice = VerdictsNotice(
                instance=self.table.instance, fleet=self._fleet, sent_at=self._clock.time(), verdicts=tuple(verdicts)
            )
            if len(notice.encode()) <= MAX_NOTICE_BYTES or not verdicts:
                return notice
            verdicts = verdicts[: len(verdicts) * 3 // 4]  # the up ones, last in the list, go first

    def _publish_soon(self) -> None:
        self._dirty = True
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.get_running_loop().create_task(self._publish_changes())

    async def _publish_changes(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.publish()

    async def publish(self) -> None:
        body = self.notice().encode()
        correlation_id = uuid.uuid4().hex
        headers = {NOTICE_HEADER: HEALTH_VERDICTS}
        if self._signer is not None:
            headers.update(self._signer(correlation_id, "", body))
        self._sent.append(correlation_id)
        failed = 0
        for channel in self._channels:
            try:
                await channel.publish(body, reply_to="", correlation_id=correlation_id, headers=headers)
            except Exception as exc:  # noqa: BLE001  # whatever the broker library raises: the channel is down
                failed += 1
                log.debug("verdicts_not_published", transport=channel.name, error=type(exc).__name__)
        self.table.publish_failed(bool(self._channels) and failed == len(self._channels))
        self._apply()  # a channel that works again makes the quorum count again
        self._report()

    # -- peers' verdicts -----------------------------------------------------------------------
    async def receive(self, delivery: Delivery) -> None:
        """A ``health.verdicts`` notice from the control channel (ours included: the heartbeat back).

        In order: the size, the sender's proof and principal, then the body is parsed."""
        if len(delivery.body) > MAX_NOTICE_BYTES:
            self._refuse(delivery, "invalid", f"a verdicts notice is at most {MAX_NOTICE_BYTES} bytes")
            return
        try:
            caller = self._identify(delivery)
        except GatewayError as exc:
            self._refuse(delivery, "unauthenticated", exc.message)
            return
        if caller.principal not in self._principals:
            self._refuse(delivery, "forbidden", f"{caller.name} is not in CONTROL_PRINCIPALS", caller)
            return
        try:
            notice = parse_verdicts(delivery.body)
        except ValidationError as exc:  # its message quotes the input: name the fields only
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            self._refuse(delivery, "invalid", f"invalid field(s): {fields}", caller)
            return
        except ValueError as exc:
            self._refuse(delivery, "invalid", str(exc), caller)
            return
        if notice.fleet != self._fleet:
            return  # another fleet on the same broker
        age = self._clock.time() - notice.sent_at
        if age > LIVE_FOR or age < -MAX_CLOCK_SKEW:
            # A signature is good for SIGNATURE_MAX_AGE, far longer than a notice is news: older than a
            # replica stays live, it is a captured copy published again (or a clock far off).
            self._refuse(delivery, "unauthenticated", f"a notice sent {age:.0f} s ago is stale or replayed", caller)
            return
        known = notice.instance in self.table.live_peers()
        verdicts = {(v.upstream, v.endpoint): Verdict(v.down, v.since) for v in notice.verdicts}
        if not self.table.heard(notice.instance, notice.sent_at, verdicts):
            return
        if not known and notice.instance != self.table.instance:
            self._publish_soon()  # a new peer: tell it who we are now, not at our next heartbeat
        self._apply()
        self._report()

    def _refuse(self, delivery: Delivery, kind: str, reason: str, caller: Caller | None = None) -> None:
        """Count, log (the first of each kind and sender, then every ``LOG_EVERY``th: a misconfigured
        fleet refuses every heartbeat) and, when the sender is not proven or not allowed, a security event."""
        self.refused += 1
        principal = caller.principal if caller is not None else None
        if delivery.correlation_id in self._sent:
            self._own_refused += 1
        if delivery.correlation_id in self._sent and self._own_refused % LOG_EVERY == 1:
            log.error(
                "own_verdicts_refused", kind=kind, reason=reason,
                fix="list this gateway's own principal (its AMQP user, or CONTROL_KEY_ID's key) in CONTROL_PRINCIPALS",
            )  # fmt: skip
        self._refusals[(kind, principal)] += 1
        seen = self._refusals[(kind, principal)]
        if seen % LOG_EVERY == 1:
            log.warning(
                "verdicts_refused", kind=kind, reason=reason, principal=principal, transport=delivery.transport,
                times=seen,
            )  # fmt: skip
        if kind != "invalid":
            self._observer.on_event(
                SecurityRefused(kind, f"health.verdicts: {reason}", principal=principal, transport=delivery.transport)
            )

    # -- the decision, carried out -------------------------------------------------------------
    def _apply(self) -> None:
        for key, tally in self.table.to_take_out():
            self._carry_out(key, tally)

    def _carry_out(self, key: Key, tally: Tally) -> None:
        upstream, endpoint = key
        reason = f"{tally.votes} of {tally.live} replicas say it is down (quorum {tally.quorum})"
        self._taking_out = key
        try:
            taken = self._take_out(upstream, endpoint, reason)
        finally:
            self._taking_out = None
        if taken:
            self.taken_out += 1
            log.warning("endpoint_taken_out_by_quorum", upstream=upstream, endpoint=endpoint, reason=reason)
            self._observer.on_event(EndpointTakenOut(upstream, endpoint, tally.votes, tally.quorum, tally.live))

    def peers(self, upstream: str, endpoint: str) -> Tally | None:
        """The quorum's tally on one endpoint while at least one live replica says it is down (for status)."""
        tally = self.table.tally((upstream, endpoint))
        return tally if tally.votes else None

    def _report(self) -> None:
        state = (self.table.degraded, len(self.table.live_peers()))
        if state == self._reported:
            return
        before, self._reported = self._reported, state
        degraded, live = state
        if before is None or before[0] != degraded:
            if degraded:
                log.warning("shared_health_degraded", note="no word from the control channel: local decisions only")
            elif before is not None:
                log.warning("shared_health_restored", live_peers=live)
        reason = "control channel silent" if degraded else "peers heard"
        self._observer.on_event(SharedHealthChanged(degraded, live, reason))

    def __repr__(self) -> str:
        return f"<SharedHealth {self._fleet} {self.table!r} taken_out={self.taken_out} refused={self.refused}>"


def build_shared_health(
    settings: Settings,
    *,
    instance: str,
    take_out: TakeOut,
    identifier: Identifier,
    observer: Observer,
    clock: Clock,
) -> SharedHealth | None:
    """Shared health as the settings ask, or None (said at start, loudly, when that is a surprise)."""
    if not settings.shared_health:
        log.info("shared_health_off", reason="SHARED_HEALTH is false: every replica decides alone")
        return None
    control = principals(settings.control_principals)
    if not control:
        log.warning(
            "shared_health_peer_verdicts_ignored",
            reason="CONTROL_PRINCIPALS is empty: no verdict can be proven, so each replica decides alone",
            fix="list the gateways' own principal (their AMQP user, or CONTROL_KEY_ID's key) in CONTROL_PRINCIPALS",
        )
        return None
    signer = None
    if settings.control_key_id is not None:
        key = identifier.signing_key(settings.control_key_id)
        if key is None:
            raise ConfigError(f"CONTROL_KEY_ID: no key {settings.control_key_id!r} under security.keys")
        signer = _signer(settings.control_key_id, key.secret, clock)
    heartbeat = settings.shared_health_heartbeat_ms / 1000
    table = QuorumTable(instance, clock=clock, quorum=settings.shared_health_quorum, heartbeat=heartbeat)
    return SharedHealth(
        table, fleet=settings.requests_queue, take_out=take_out, identify=identifier.identify,
        principals=control, observer=observer, clock=clock, signer=signer, heartbeat=heartbeat,
    )  # fmt: skip
