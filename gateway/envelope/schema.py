"""The published wire contract: JSON Schemas generated from the models, and an AsyncAPI 3.0 document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from gateway.envelope.control import MAX_COMMAND_BYTES, Answer, StatusCommand
from gateway.envelope.health import MAX_NOTICE_BYTES, NOTICE_HEADER, VerdictsNotice
from gateway.envelope.models import CONTRACT_VERSION, ReplyEnvelope, RequestEnvelope, TelemetryEvent
from gateway.events import SECURITY_KINDS

REQUESTS = "cmn.requests"
TELEMETRY = "cmn.telemetry"
DEAD_LETTERS = "cmn.requests.dlq"
CONTROL = "cmn.control"


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12) for each envelope."""
    out: dict[str, dict[str, Any]] = {}
    models: tuple[tuple[str, type[BaseModel], JsonSchemaMode], ...] = (
        ("request", RequestEnvelope, "validation"),
        ("reply", ReplyEnvelope, "serialization"),
        ("telemetry", TelemetryEvent, "serialization"),
        ("control-status", StatusCommand, "validation"),
        ("control-answer", Answer, "serialization"),
        ("control-verdicts", VerdictsNotice, "validation"),
    )
    for name, model, mode in models:
        schema = model.model_json_schema(by_alias=True, mode=mode)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        out[f"{name}.schema.json"] = schema
    return out


def _message(name: str, schema_file: str, summary: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "headers": {"type": "object", "properties": headers},
        "payload": {"$ref": f"./{schema_file}"},
    }


_TRACE = {"traceparent": {"type": "string", "description": "W3C trace context, passed through."}}
_TELEMETRY_TYPES = (
    "type names the event: request.completed per answered request; breaker, endpoint, rate-limit and certificate "
    "changes as they happen; security.<kind> for every request refused for security's sake, kind one of "
    f"{', '.join(SECURITY_KINDS)}, with data kind, reason, principal, upstream, transport and request_id (never "
    "a secret); request.parked per try parked on a park tier (data request_id, upstream, method, tier, delay, "
    "park_count, attempts, reason, remaining, transport, principal). RabbitMQ routes by type (bind security.# for "
    "every refusal); Kafka records carry it in header type."
)
PARK = "cmn.requests.park.{delay}s"
_PARK_HEADERS = {
    "x-cmn-park-count": {"type": "string", "description": "Parks so far, this one included."},
    "x-cmn-park-deadline": {"type": "string", "description": "Epoch ms of the request's deadline (kept)."},
    "x-cmn-park-attempts": {"type": "string", "description": "HTTP attempts so far, over every try."},
    "x-cmn-park-principal": {"type": "string", "description": "The caller the gateway established."},
    "x-cmn-park-via": {"type": "string", "enum": ["user_id", "signature", "none"]},
    "x-cmn-park-nonce": {"type": "string"},
    "x-cmn-park-seal": {
        "type": "string",
        "description": "v1= HMAC-SHA256 (PARK_SECRET) over the park headers, correlation id, reply address and "
        "body; a copy whose seal does not verify is treated as a fresh request, a seal is accepted once.",
    },
}


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0: the three channels on both brokers, request/reply operations."""
    amqp_req = {
        "is": "queue",
        "queue": {"name": REQUESTS, "durable": True, "exclusive": False, "autoDelete": False},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CMN gateway wire contract",
            "version": f"{CONTRACT_VERSION}.0.0",
            "description": (
                "Publish a request envelope to cmn.requests (JSON or msgpack); the gateway performs the HTTP call "
                "and publishes the reply envelope to the requester's reply address. RabbitMQ: AMQP reply_to, "
                "correlation_id, content_type. Kafka: headers reply_to, correlation_id, content-type; the reply "
                "is keyed by the correlation id. Dead-lettered messages keep their bytes and carry x-cmn-error."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0-9-1"},
            "kafka": {"host": "localhost:9092", "protocol": "kafka"},
        },
        "channels": {
            "requests": {
                "address": REQUESTS,
                "messages": {"request": {"$ref": "#/components/messages/request"}},
                "bindings": {"amqp": amqp_req, "kafka": {"topic": REQUESTS}},
            },
            "replies": {
                "address": None,
                "description": "The requester's reply queue (AMQP reply_to) or reply topic (Kafka header reply_to).",
                "messages": {"reply": {"$ref": "#/components/messages/reply"}},
            },
            "telemetry": {
                "address": TELEMETRY,
                "description": "Topic exchange bound to a stream queue (RabbitMQ, routing key = event type); topic.",
                "messages": {"event": {"$ref": "#/components/messages/telemetry"}},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": TELEMETRY, "type": "topic", "durable": True},
                    },
                    "kafka": {"topic": TELEMETRY},
                },
            },
            "control": {
                "address": CONTROL,
                "description": (
                    "Commands to every live replica (cmn status). RabbitMQ: a topic exchange, each replica binding "
                    "an exclusive queue with #; Kafka: a topic each replica reads with no consumer group, from the "
                    f"end. A command is a JSON object with a type, at most {MAX_COMMAND_BYTES} bytes, sent with "
                    "reply_to and correlation_id like a request; every replica answers on reply_to (errors too: "
                    "too_large, invalid, unknown_command, unauthenticated, forbidden). A reply_to that is not a "
                    "reply address gets no answer. Commands that change state need a principal (AMQP user_id or "
                    "the x-cmn-signature headers) listed in CONTROL_PRINCIPALS."
                ),
                "messages": {
                    "status": {"$ref": "#/components/messages/controlStatus"},
                    "verdicts": {"$ref": "#/components/messages/controlVerdicts"},
                },
                "bindings": {
                    "amqp": {"is": "routingKey", "exchange": {"name": CONTROL, "type": "topic", "durable": True}},
                    "kafka": {"topic": CONTROL},
                },
            },
            "controlAnswers": {
                "address": None,
                "description": "The caller's reply queue or topic: one answer per replica, gathered within a window.",
                "messages": {"answer": {"$ref": "#/components/messages/controlAnswer"}},
            },
            "park": {
                "address": PARK,
                "description": (
                    "Park tiers, one per delay of an upstream's park: {delays: [...]}: a failed try of a request "
                    "that is safe to send again, with time left on its deadline, is republished here (body, "
                    "reply address, correlation id and headers unchanged, park headers added) and comes back "
                    "to cmn.requests after the delay. RabbitMQ: a durable queue with x-message-ttl and a "
                    "dead-letter route to the requests queue; Kafka: a topic the gateway's <group>.park "
                    "consumer relays once each record is due. Written and read by gateways only."
                ),
                "parameters": {"delay": {"description": "The tier's delay in whole seconds."}},
                "messages": {"parked": {"$ref": "#/components/messages/parked"}},
            },
            "deadLetters": {
                "address": DEAD_LETTERS,
                "description": "Original request bytes that could not be served, with header x-cmn-error.",
                "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
                "bindings": {"amqp": {"is": "queue", "queue": {"name": DEAD_LETTERS, "durable": True}}},
            },
        },
        "operations": {
            "sendRequest": {
                "action": "send",
                "channel": {"$ref": "#/channels/requests"},
                "reply": {
                    "channel": {"$ref": "#/channels/replies"},
                    "address": {"location": "$message.header#/reply_to"},
                },
            },
            "sendControlCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/control"},
                "reply": {
                    "channel": {"$ref": "#/channels/controlAnswers"},
                    "address": {"location": "$message.header#/reply_to"},
                },
            },
            "shareVerdicts": {
                "action": "send",
                "channel": {"$ref": "#/channels/control"},
                "messages": [{"$ref": "#/channels/control/messages/verdicts"}],
            },
            "receiveTelemetry": {"action": "receive", "channel": {"$ref": "#/channels/telemetry"}},
            "receiveDeadLetters": {"action": "receive", "channel": {"$ref": "#/channels/deadLetters"}},
        },
        "components": {
            "messages": {
                "request": _message(
                    "request",
                    "request.schema.json",
                    "A request envelope (also application/msgpack).",
                    {
                        "reply_to": {"type": "string"},
                        "correlation_id": {"type": "string"},
                        "content-type": {
                            "type": "string",
                            "enum": ["application/json", "application/msgpack"],
                        },
                        **_TRACE,
                    },
                ),
                "reply": _message(
                    "reply",
                    "reply.schema.json",
                    "The reply envelope, in the request's codec.",
                    {"correlation_id": {"type": "string"}, **_TRACE},
                ),
                "telemetry": {
                    **_message("telemetry", "telemetry.schema.json", "One telemetry event.", _TRACE),
                    "description": _TELEMETRY_TYPES,
                },
                "controlStatus": _message(
                    "controlStatus",
                    "control-status.schema.json",
                    "status: every replica answers with its instance state document (/admin/upstreams).",
                    {"reply_to": {"type": "string"}, "correlation_id": {"type": "string"}},
                ),
                "controlAnswer": _message(
                    "controlAnswer",
                    "control-answer.schema.json",
                    "One replica's answer: ok with a result, or an error code and message.",
                    {"correlation_id": {"type": "string"}},
                ),
                "controlVerdicts": {
                    **_message(
                        "controlVerdicts",
                        "control-verdicts.schema.json",
                        "health.verdicts: one replica's own endpoint verdicts, on every change and every 5 s.",
                        {NOTICE_HEADER: {"type": "string", "const": "health.verdicts"}},
                    ),
                    "description": (
                        "A notice, not a command: no reply_to, no answer. Each replica publishes its own verdicts "
                        "(breaker opened, endpoint ejected or failing health checks: down) and every replica "
                        "keeps each live peer's latest; an endpoint is down for a replica when SHARED_HEALTH_QUORUM "
                        "live replicas (default a majority of those heard in 30 s, itself counted) say so. Counted "
                        "only from a principal in CONTROL_PRINCIPALS (AMQP user_id, or x-cmn-signature by "
                        f"CONTROL_KEY_ID's key); at most {MAX_NOTICE_BYTES} bytes."
                    ),
                },
                "parked": {
                    "name": "parked",
                    "summary": "A parked request: the original bytes and headers, with the park headers.",
                    "headers": {"type": "object", "properties": _PARK_HEADERS},
                    "payload": {"type": "string", "format": "binary"},
                },
                "deadLetter": {
                    "name": "deadLetter",
                    "summary": "The original request bytes.",
                    "headers": {
                        "type": "object",
                        "properties": {
                            "x-cmn-error": {"type": "string", "description": "code: reason"},
                            "x-cmn-topic": {
                                "type": "string",
                                "description": "Kafka: the requests topic it came from (replay sends it back there).",
                            },
                        },
                    },
                    "payload": {"type": "string", "format": "binary"},
                },
            }
        },
    }


def render() -> dict[str, bytes]:
    """Every file of ``schemas/``, byte for byte."""
    files = {name: schema for name, schema in json_schemas().items()}
    files["asyncapi.json"] = asyncapi()
    return {
        name: orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, doc in files.items()
    }


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in render().items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written
