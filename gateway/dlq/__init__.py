"""Dead letters as an operator's queue: ``cmn dlq list | show | replay`` on either broker.

    letters.py   what one dead letter says (id, code, reason, upstream, age, principal), filters,
                 the redacted view, whether it may be replayed without --force
    replay.py    replay: republish (confirmed), then remove; keep the rest; strip or re-sign
    cli.py       the typer sub-app and its 80-column table

Reading and removal are the broker's (``gateway.bus.rabbitmq.dlq``, ``gateway.bus.kafka.dlq``).
"""
