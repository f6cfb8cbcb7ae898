"""What a late starter takes from its peers' answers to ``breaker.forced``."""

from __future__ import annotations

from gateway.control.peers import forced_states_of_peers
from gateway.envelope.control import Answer

FORCED = {"upstream": "payments", "endpoint": "http://a", "state": "open", "by": "ops", "until": 2e9}


def answer(instance: str, result: dict[str, object] | None, *, ok: bool = True) -> Answer:
    return Answer(instance=instance, type="breaker.forced", ok=ok, result=result)


def test_peers_forced_states_are_gathered_and_its_own_answer_skipped() -> None:
    answers = [
        answer("me", {"forced": [dict(FORCED, upstream="mine")]}),
        answer("peer-1", {"forced": [FORCED]}),
        answer("peer-2", {"forced": [FORCED, "not a forcing"]}),
        answer("peer-3", None, ok=False),
        answer("peer-4", {"forced": "garbage"}),
    ]
    assert forced_states_of_peers(answers, "me") == [FORCED, FORCED]
