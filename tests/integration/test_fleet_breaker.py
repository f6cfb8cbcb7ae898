"""`cmn breaker` over a fleet of real `cmn serve` processes (issue 11, section 3): a forced open reaches
every replica, names the principal, and a reset puts every replica back to automatic."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.rabbit import AMQP_URL
from tests.integration.process import REPO, ServeProcess
from tests.integration.test_fleet_status import cmn_status, fleet

__all__ = ["fleet"]  # the fixture, used here with this module's broker_env

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the fleet's loop (it is module-scoped)


@pytest.fixture(scope="module")
def broker_env() -> dict[str, str]:
    """RabbitMQ, where the broker's user (guest) is the caller's principal; guest may change state."""
    return {
        "AMQP_URL": AMQP_URL,
        "CMN_REQUESTS_QUEUE": f"t.requests.{uuid.uuid4().hex[:10]}",
        "CONTROL_PRINCIPALS": "guest",
    }


async def cmn_breaker(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "breaker", *args,
        env={**os.environ, **env}, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(errors="replace")


def breakers(document: dict[str, Any], fleet: list[str]) -> dict[str, Any]:
    """instance -> the payments endpoint's breaker, for the fleet's replicas."""
    found = {}
    for replica in document["replicas"]:
        if replica["instance"] in fleet:
            [payments] = [u for u in replica["upstreams"] if u["name"] == "payments"]
            [endpoint] = payments["endpoints"]
            found[replica["instance"]] = endpoint["breaker"]
    return found


def fleet_upstream(document: dict[str, Any]) -> str:
    """The fleet's upstream URL, read back from a status document."""
    for replica in document["replicas"]:
        for upstream in replica["upstreams"]:
            if upstream["name"] == "payments":
                return str(upstream["endpoints"][0]["url"])
    raise AssertionError("no payments upstream in the status document")


async def start_replica(tmp_path: Path, name: str, env: dict[str, str], url: str) -> ServeProcess:
    (tmp_path / name).mkdir()
    upstreams = {"payments": {"endpoints": [url]}, "ledger": {"endpoints": [url]}}
    process = ServeProcess(tmp_path / name, upstreams, {**env, "CMN_INSTANCE": name})
    await process.start()
    return process


async def _until_forced(env: dict[str, str], name: str, within: float = 60.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        _, document, _ = await cmn_status(env, "--upstream", "payments", "--wait", "0.5")
        forced = breakers(document, [name]).get(name, {}).get("forced")
        if forced is not None:
            return dict(forced)
        if loop.time() > end:
            raise TimeoutError(f"{name} never showed the forced state")


async def test_a_forced_open_reaches_every_replica_and_reset_undoes_it(
    fleet: list[str], broker_env: dict[str, str], tmp_path: Path
) -> None:
    # cmn.control is the broker's: replicas of other fleets (other tests) answer too, and may refuse.
    code, out, err = await cmn_breaker(broker_env, "open", "payments", "--for", "10m")
    ours = [line for line in out.splitlines() if line.split(":")[0] in fleet]
    assert sorted(line.split(":")[0] for line in ours) == fleet, err
    assert all(line.endswith("open payments: 1 breaker(s) changed") for line in ours)
    assert not any(name in err for name in fleet)

    code, document, _ = await cmn_status(broker_env, "--upstream", "payments")
    forced = {name: b["forced"] for name, b in breakers(document, fleet).items()}
    assert sorted(forced) == fleet
    assert {(f["state"], f["by"]) for f in forced.values()} == {("open", "guest")}
    assert all(500 < f["until"] - document["replicas"][0]["time"] <= 600 for f in forced.values())
    untils = [f["until"] for f in forced.values()]
    assert max(untils) - min(untils) < 1.0  # each replica forced it on receipt: all within a second

    # A replica that starts now learns the forcing from its peers, with the time it has left.
    late_name = f"{fleet[0]}-late"
    late = await start_replica(tmp_path, late_name, broker_env, fleet_upstream(document))
    try:
        learned = await _until_forced(broker_env, late_name)
        assert (learned["state"], learned["by"]) == ("open", "guest")
        assert abs(learned["until"] - min(untils)) < 2.0  # the peers' expiry, not a fresh hour
    finally:
        await late.aclose()

    code, out, err = await cmn_breaker(broker_env, "open", "nosuch")
    err = " ".join(err.split())  # the console may wrap long lines
    assert code == 1 and sum(f"{name}: unknown_upstream" in err for name in fleet) == 3

    code, out, err = await cmn_breaker(broker_env, "reset", "payments")
    assert sum(line.split(":")[0] in fleet for line in out.splitlines()) == 3, err
    code, document, _ = await cmn_status(broker_env, "--upstream", "payments")
    assert {name: b["forced"] for name, b in breakers(document, fleet).items()} == dict.fromkeys(fleet)


async def test_a_bad_duration_or_action_is_refused_before_anything_is_sent(broker_env: dict[str, str]) -> None:
    code, _, err = await cmn_breaker(broker_env, "open", "payments", "--for", "bogus")
    assert code == 2 and "--for takes a duration" in " ".join(err.split())
    code, _, err = await cmn_breaker(broker_env, "half-open", "payments")
    assert code == 2
