"""The ``breaker`` control command: its model refuses what a hostile or mistaken caller could send, the
responder serves it only to CONTROL_PRINCIPALS and runs it on a real forwarder, and ``--for`` parses."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.app import Gateway, load_config
from gateway.clock import SystemClock
from gateway.control.breaker import BreakerCommand, parse_for, register_breaker, send_breaker
from gateway.control.registry import default_registry
from gateway.events import BreakerForced, RecordingObserver
from gateway.settings import load_settings
from gateway.testing import FakeClock
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from tests.control.test_responder import answer_to, command, make, status_of
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import upstreams


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "half_open", "upstream": "pay"},
        {"action": "open", "upstream": "../etc"},
        {"action": "open", "upstream": "pay", "duration": 0},
        {"action": "open", "upstream": "pay", "duration": 8 * 86400},
        {"action": "open", "upstream": "pay", "principal": "root"},  # the principal is the caller's, never sent
        {"action": "open", "upstream": "pay", "endpoint": ""},
    ],
)
def test_the_model_refuses_bad_commands(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BreakerCommand.model_validate({"type": "breaker", **fields})


def test_defaults_are_the_issues() -> None:
    assert BreakerCommand(action="open", upstream="pay").duration == 3600.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0)]
)
def test_parse_for(text: str, seconds: float) -> None:
    assert parse_for(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "bogus", "0", "-5m", "8d", "nan", "inf"])
def test_parse_for_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--for"):
        parse_for(text)


async def test_the_responder_forces_a_real_forwarders_breakers_for_a_control_principal_only() -> None:
    clock = FakeClock()
    config = upstreams(pay={"endpoints": ["http://127.0.0.1:9"]})
    async with build_forwarder(
        config, UpstreamDefaults(), clock=clock, observer=RecordingObserver(), stats_interval=None
    ) as fwd:

        def force(upstream: str, state: str, **kw: Any) -> dict[str, Any]:
            try:
                affected = fwd.force_breakers(upstream, state, **kw)  # type: ignore[arg-type]  # checked by the model
            except Exception as exc:  # noqa: BLE001  # the gateway's answer shape, as Gateway.force_breakers gives it
                return {"ok": False, "code": getattr(exc, "code", "invalid_request"), "error": str(exc)}
            return {"ok": True, "affected": [list(a) for a in affected]}

        registry = default_registry(status_of)
        register_breaker(registry, force, fwd.forced_states)
        responder, channel, _ = make(allowed="ops", registry=registry)
        body = {"type": "breaker", "action": "open", "upstream": "pay", "duration": 60}
        refused = await answer_to(responder, channel, command(body, user_id="intern"))
        assert (refused["ok"], refused["error"]) == (False, "forbidden")
        assert fwd.forced_states() == []
        done = await answer_to(responder, channel, command(body, user_id="ops"))
        assert done["ok"] is True and done["result"]["affected"] == [["pay", "http://127.0.0.1:9"]]
        [forced] = fwd.forced_states()
        assert (forced["state"], forced["by"], forced["until"]) == ("open", "ops", clock.time() + 60)
        asked = await answer_to(responder, channel, command({"type": "breaker.forced"}))  # read-only: anyone
        assert asked["ok"] is True and asked["result"] == {"forced": [forced]}
        unknown = await answer_to(responder, channel, command({**body, "upstream": "nope"}, user_id="ops"))
        assert (unknown["ok"], unknown["error"]) == (False, "unknown_upstream")
        reset = await answer_to(responder, channel, command({**body, "action": "reset"}, user_id="ops"))
        assert reset["ok"] is True and fwd.forced_states() == []


async def test_a_signed_breaker_command_on_tansu_forces_and_a_late_starter_applies_what_its_peer_exports(
    kafka_bootstrap: str, start_upstream: StartUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("CMN_TEST_OPS_KEY", secret)
    upstream = await start_upstream(web.Application())
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    instance = f"gw-breaker-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, CMN_REQUESTS_QUEUE=queue, KAFKA_GROUP_ID=f"g.{queue}",
        KAFKA_SESSION_TIMEOUT_MS=1000, REQUIRE_IDENTITY=True, CMN_INSTANCE=instance, CONTROL_PRINCIPALS="ops",
    )  # fmt: skip
    document = {
        "upstreams": {"payments": {"endpoints": [upstream.url]}},
        "security": {"keys": {"k1": {"principal": "ops", "secret": {"env": "CMN_TEST_OPS_KEY"}}}},
    }
    clock = SystemClock()
    open_for = BreakerCommand(action="open", upstream="payments", duration=600)
    async with Gateway(load_config(settings, document)) as gateway:
        unsigned = await send_breaker(settings, open_for, wait=1.0, clock=clock)
        assert gateway.forced_breakers() == []
        signed = await send_breaker(settings, open_for, wait=1.0, clock=clock, key_id="k1", secret=secret)
        exported = gateway.forced_breakers()
    assert [(a.instance, a.error) for a in unsigned if a.instance == instance] == [(instance, "unauthenticated")]
    assert [(a.instance, a.ok, a.principal) for a in signed if a.instance == instance] == [(instance, True, "ops")]
    [forced] = exported
    assert (forced["upstream"], forced["state"], forced["by"]) == ("payments", "open", "ops")
    assert 590 < forced["until"] - clock.time() <= 600

    late_settings = load_settings(CMN_INSTANCE="gw-late", ENABLE_METRICS=False)
    observer = RecordingObserver()
    late = Gateway(
        load_config(late_settings, {"upstreams": document["upstreams"]}), observers=[observer], transports=[]
    )
    async with late:
        applied = late.apply_forced_breakers(exported)
        assert applied["applied"] == [{"upstream": "payments", "endpoint": upstream.url}]
        assert late.forced_breakers()[0]["by"] == "ops"
        [event] = observer.of_type(BreakerForced)
    assert isinstance(event, BreakerForced) and (event.state, event.principal) == ("open", "ops")
