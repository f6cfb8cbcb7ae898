"""RabbitMQ: the gateway's transport and the SDK's requester over AMQP 0-9-1 (aio-pika, aiormq).

    transport.py   RabbitTransport: consume requests, publish replies/telemetry/dead letters, ack
    requester.py   RabbitRequester: the SDK side, send requests and receive replies
    stream.py      RabbitTelemetryStream: tail the cmn.telemetry stream queue
    publisher.py   ConfirmedPublisher: the one publish retry loop (confirmed, or BusUnavailableError)
    recovery.py    Resubscriber: consume again after aio-pika reopened a channel
    topology.py    names (Topology, direct reply-to, stream arguments) and their declarations
    connection.py  connect() (robust, coalesced writes), amqps TLS, BROKER_ERRORS, the audit's bare login
    properties.py  AMQP message properties written and headers read
    aiormq_internals/  the patches that reach into aiormq and pamqp, each with its fall-back

Import what you need from its module; this package re-exports nothing.
"""
