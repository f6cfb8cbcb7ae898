"""Kafka: the gateway's transport and the SDK's requester over any Kafka-protocol broker (aiokafka).

    transport.py   KafkaTransport: consume requests in a group, publish replies/telemetry/dead letters
    requester.py   KafkaRequester, KafkaTelemetryStream: the SDK side, requests out, replies and telemetry in
    producer.py    KafkaProducerLink: one confirmed (acks=all) producer for every topic a client writes
    offsets.py     OffsetBook: commit each partition only up to its oldest unfinished record
    records.py     KafkaOptions (client options), the Kafka errors, record headers and record -> Delivery
    security.py    KafkaSecurity: SASL and TLS for every client, from settings

Import what you need from its module; this package re-exports nothing.
"""
