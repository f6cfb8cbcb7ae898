"""Everything in CMN that reaches into aiormq's or pamqp's internals, and nothing else.

Each patch makes the gateway faster or sturdier, none is needed for it to be correct, and each
checks the shape it relies on before relying on it. ``aiormq>=6.8,<8`` is pinned (pyproject.toml);
mypy --strict checks the attributes used against aiormq's inline types, and the tests under
tests/bus/rabbitmq/aiormq_internals/ compare with aiormq's own behaviour and pamqp's bytes.

coalesce.py: coalesced writes (``coalesce_writes(connection, stats)``), applied by ``connection.connect``
    Reaches into: the aiormq ``Connection.write_queue`` (an ``asyncio.Queue`` of ``ChannelFrame``),
    the writer task's use of ``payload``, ``should_close`` and ``drain()``, and the queue's private
    ``_maxsize`` (aiormq's 10-frame bound, widened to 4096).
    Checks: ``write_queue`` is an ``asyncio.Queue``; the bound is widened only if ``_maxsize`` exists.
    Fall-back: the connection is left as aiormq made it (logged at INFO, ``coalesce_writes`` returns
    False); frames are written one by one, which only costs CPU.

wire.py: lean publish and ack (``LeanPublisher.try_publish``, ``try_ack``), used by
    ``publisher.ConfirmedPublisher`` and ``transport.RabbitTransport.settle``
    Reaches into: an ``aiormq.Channel``'s ``number``, ``delivery_tag``, ``confirmations``,
    ``message_id_delivery_tag``, ``max_content_size``, ``publisher_confirms``, ``create_future``
    and ``write_queue``; it encodes AMQP frames itself with ``struct``.
    Checks: ``lean_shape(channel)`` once per channel (those attributes, of those types); then per
    message: properties outside the encoded shape, names over 255 bytes, a mandatory message
    without a message id, a closed channel or a full write queue.
    Fall-back: ``try_publish`` returns None and ``try_ack`` False; the caller then uses aiormq's
    ``basic_publish`` / ``basic_ack``, unchanged.

confirms.py: ordered confirms (``ordered_confirms(channel)``), applied by ``publisher.ConfirmedPublisher``
    Reaches into: the channel's ``confirmations`` dict, its ``_confirm_delivery`` and the reader's
    lookup of ``_on_confirm_frame`` on the instance, which it replaces.
    Checks: ``confirmations`` is a dict and ``_confirm_delivery`` exists.
    Fall-back: the channel is left alone (logged at INFO, returns False); a ``multiple`` confirm
    then walks every pending tag, as aiormq does, which only costs CPU.

text.py: non-UTF-8 short strings (``tolerate_non_utf8()``), applied by the transport and the requester
    Reaches into: pamqp's decoder dispatch tables ``decode.METHODS['shortstr']``,
    ``decode.METHODS['table']`` and ``decode.TABLE_MAPPING[b'F']`` (process-wide, once).
    Checks: ``decoder_fits(pamqp.decode)``: both tables are dicts holding those keys, and
    ``embedded_value`` (which the replacement table decoder calls) exists.
    Fall-back: pamqp keeps its strict decoders (logged at WARNING, returns False): a message with
    a header key or short string that is not UTF-8 is then a frame error that closes the
    connection it arrives on (every connection it reaches, until it is removed from its queue).
"""
