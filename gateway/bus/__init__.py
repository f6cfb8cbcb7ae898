"""The only place broker libraries (aio-pika, aiormq, pamqp, aiokafka) are imported.

    base.py       Delivery, OutboundMessage, the Transport and Requester protocols, default names
    embedded.py   EmbeddedBroker: a Kafka-protocol broker (Tansu) for trying CMN and development
    rabbitmq/     RabbitTransport, RabbitRequester and their parts; aiormq_internals/ quarantines
                  the patches that reach into aiormq and pamqp
    kafka/        KafkaTransport, KafkaRequester and their parts

Every module is imported by its own path (``gateway.bus.rabbitmq.transport``); no package
re-exports. import-linter (pyproject.toml) keeps broker libraries out of every other package.
"""
