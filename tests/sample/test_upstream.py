"""The sample upstream over real HTTP: which charges it declines is the caller's choice, not chance."""

from __future__ import annotations

import aiohttp

from gateway.sample.upstream import payments_app, serve


async def test_a_charge_is_declined_only_when_its_amount_ends_in_02() -> None:
    runner, url = await serve(payments_app(max_delay_ms=0.0))
    try:
        async with aiohttp.ClientSession() as session:
            statuses = {}
            for amount in (100, 101, 102, 402, 1002, 103):
                async with session.post(f"{url}/v1/charges", json={"amount": amount}) as response:
                    statuses[amount] = (response.status, (await response.json()).get("error"))
            async with session.post(f"{url}/v1/charges", json={"currency": "EUR"}) as response:
                assert response.status == 201  # no amount: nothing to decline
    finally:
        await runner.cleanup()
    assert statuses == {
        100: (201, None),
        101: (201, None),
        102: (402, "card_declined"),
        402: (402, "card_declined"),
        1002: (402, "card_declined"),
        103: (201, None),
    }
