"""Kafka connections authenticated (SASL) and encrypted (TLS), from settings to the wire.

Against Tansu itself: with ``--authentication`` it refuses clients that do not log in, offers
SCRAM-SHA-256/512 (no PLAIN), and refuses our SCRAM logins, because Tansu 0.6.0 cannot be given a
user (see ``KafkaFront`` in tests/fixtures/kafka.py). So a login that succeeds, and TLS, are tested
through ``KafkaFront``: the SASL/TLS listener of a real broker, in front of a plain Tansu.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import Gateway, load_config
from gateway.bus.embedded import EmbeddedBroker
from gateway.bus.kafka.records import KafkaLoginRefusedError, KafkaUnavailableError
from gateway.bus.kafka.security import KafkaSecurity, security_from_settings
from gateway.bus.kafka.transport import KafkaTransport
from gateway.certs.devca import DevCertificateAuthority, write_leaf
from gateway.certs.tls import server_context
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.tls import TlsSettings, client_context
from tests.fixtures.kafka import FAST_GROUP, KafkaFront, _kbytes, _kstring, kafka_behind_front, unique
from tests.fixtures.upstreams import Upstream

USERS = {"cmn-gateway": "gateway-s3cret-pw", "cmn-client": "client-s3cret-pw"}
WRONG = "not-the-password-9f3b"
REPO = Path(__file__).resolve().parents[2]


def sasl_env(mechanism: str, user: str, password: str, protocol: str = "SASL_PLAINTEXT") -> dict[str, Any]:
    return {
        "KAFKA_SECURITY_PROTOCOL": protocol,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD": password,
    }


def gateway_for(bootstrap: str, upstream: Upstream, env: dict[str, Any], **document: Any) -> Gateway:
    """A gateway whose Kafka transport is built from settings (wiring.build_transports), as `cmn serve` does."""
    settings = load_settings(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        CMN_REQUESTS_QUEUE=unique("t.requests"),
        KAFKA_GROUP_ID=unique("g"),
        KAFKA_SESSION_TIMEOUT_MS=FAST_GROUP["session_timeout_ms"],
        ENABLE_METRICS=False,
        **env,
    )
    return Gateway(load_config(settings, {"upstreams": {"echo": {"endpoints": [upstream.url]}}, **document}))


async def round_trip(gateway: Gateway, client: GatewayClient) -> dict[str, Any]:
    async with gateway, client:
        reply = await client.request("echo", "POST", "/secured", json={"n": 1}, timeout=15)
    assert reply.error is None, reply.error
    assert reply.status == 200
    body: dict[str, Any] = reply.json_
    return body


# -- the value and its checks (no broker) ---------------------------------------------------------
def test_sasl_needs_mechanism_username_and_password_and_never_echoes_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", None, "hunter2-secret")
    assert "username" in caught.value.message and "hunter2" not in caught.value.message
    with pytest.raises(ConfigError, match="mechanism, password"):
        KafkaSecurity("SASL_PLAINTEXT", None, "svc", None)


def test_credentials_without_a_sasl_protocol_are_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigError, match="SASL_SSL") as caught:
        KafkaSecurity("SSL", "PLAIN", "svc", "hunter2-secret")
    assert "hunter2" not in caught.value.message


def test_tls_context_only_with_a_tls_protocol_and_the_system_store_by_default() -> None:
    with pytest.raises(ConfigError, match="does not use TLS"):
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "svc", "pw", ssl_context=ssl.create_default_context())
    context = KafkaSecurity("SSL").ssl_context
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert KafkaSecurity().client_kwargs() == {"security_protocol": "PLAINTEXT", "ssl_context": None}


def test_client_kwargs_carry_everything_aiokafka_needs_and_repr_hides_the_password() -> None:
    context = ssl.create_default_context()
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "svc", "hunter2-secret", ssl_context=context)
    assert security.client_kwargs() == {
        "security_protocol": "SASL_SSL",
        "ssl_context": context,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "hunter2-secret",
    }
    assert "hunter2" not in repr(security) and "hunter2" not in security.describe()
    assert "svc" in security.describe()


def test_settings_are_checked_together(tmp_path: Path) -> None:
    remote = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.internal:9093"}
    with pytest.raises(ConfigError, match="KAFKA_SSL_CA_FILE need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"):
        security_from_settings(load_settings(**remote, KAFKA_SSL_CA_FILE=tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match="KAFKA_SASL") as caught:
        security_from_settings(load_settings(**remote, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_PASSWORD="pw-x1"))
    assert "pw-x1" not in caught.value.message
    with pytest.raises(ConfigError, match="embedded broker"):
        security_from_settings(load_settings(**sasl_env("SCRAM-SHA-512", "u", "p")))  # no bootstrap: embedded
    security = security_from_settings(load_settings(**remote, **sasl_env("SCRAM-SHA-512", "u", "p", "SASL_SSL")))
    assert (security.protocol, security.mechanism, security.username, security.tls) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "u",
        True,
    )


# -- real Tansu with --authentication -------------------------------------------------------------
@pytest.fixture
async def tansu_auth() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(port=0, authentication=True, clock=SystemClock()) as broker:
        yield broker


async def test_tansu_with_authentication_refuses_a_client_that_does_not_log_in(tansu_auth: EmbeddedBroker) -> None:
    transport = KafkaTransport(tansu_auth.bootstrap, topic=unique("t.requests"), **FAST_GROUP, clock=SystemClock())
    try:
        with pytest.raises(KafkaUnavailableError, match="PLAINTEXT"):
            await transport.start(_never_called)
    finally:
        await transport.aclose()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_tansu_refuses_an_unknown_scram_login_with_a_clear_error(
    tansu_auth: EmbeddedBroker, echo_upstream: Upstream, mechanism: str
) -> None:
    """The gateway, built from settings, stops at start-up naming the user and mechanism, not the password."""
    gateway = gateway_for(tansu_auth.bootstrap, echo_upstream, sasl_env(mechanism, "cmn-gateway", WRONG))
    with pytest.raises(KafkaLoginRefusedError) as caught:
        async with gateway:
            pass
    message = str(caught.value)
    assert "refused the login" in message and mechanism in message and "'cmn-gateway'" in message
    assert WRONG not in message and WRONG not in repr(caught.value.__cause__)


async def test_tansu_offers_no_plain_mechanism(tansu_auth: EmbeddedBroker) -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "cmn-gateway", WRONG)
    transport = KafkaTransport(
        tansu_auth.bootstrap, topic=unique("t.requests"), security=security, **FAST_GROUP, clock=SystemClock()
    )
    try:
        with pytest.raises(KafkaUnavailableError) as caught:
            await transport.start(_never_called)
    finally:
        await transport.aclose()
    assert "PLAIN user 'cmn-gateway'" in str(caught.value) and WRONG not in str(caught.value)


@pytest.mark.xfail(strict=True, reason="Tansu 0.6.0: a refused SCRAM login (e=unknown-user) still authenticates")
async def test_tansu_does_not_serve_a_client_that_ignores_its_refused_login(tansu_auth: EmbeddedBroker) -> None:
    """Raw protocol: log in as nobody, ignore the server's ``e=unknown-user``, then ask for metadata.
    A broker that enforces authentication closes the connection; Tansu 0.6.0 answers (a bypass)."""
    host, port = tansu_auth.bootstrap.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    correlation = 0

    async def call(api_key: int, version: int, body: bytes) -> bytes:
        nonlocal correlation
        correlation += 1
        frame = struct.pack(">hhi", api_key, version, correlation) + _kstring("probe") + body
        writer.write(struct.pack(">i", len(frame)) + frame)
        await writer.drain()
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return (await reader.readexactly(size))[4:]

    try:
        await call(17, 1, _kstring("SCRAM-SHA-512"))
        first = await call(36, 1, _kbytes(b"n,,n=nobody,r=abc"))
        server_first = first[2 + 2 + struct.unpack(">h", first[2:4])[0] + 4 :].split(b"\0")[0].decode()
        nonce = dict(p.split("=", 1) for p in server_first.split(","))["r"]
        proof = base64.b64encode(bytes(64)).decode()
        await call(36, 1, _kbytes(f"c=biws,r={nonce},p={proof}".encode()))
        answered = await asyncio.wait_for(call(3, 1, struct.pack(">i", -1)), 5)  # Metadata v1, all topics
    except (asyncio.IncompleteReadError, ConnectionError):
        return  # closed: authentication enforced
    finally:
        writer.close()
    pytest.fail(f"Tansu served metadata ({len(answered)} bytes) to a client whose login it refused")


# -- a successful login and TLS, through the SASL/TLS front ---------------------------------------
@pytest.fixture
async def sasl_kafka() -> AsyncIterator[KafkaFront]:
    async with kafka_behind_front(users=USERS) as (_, front):
        yield front


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_gateway_and_client_with_the_right_credentials_serve_a_request(
    sasl_kafka: KafkaFront, echo_upstream: Upstream, mechanism: str
) -> None:
    bootstrap = f"127.0.0.1:{sasl_kafka.port}"
    gateway = gateway_for(bootstrap, echo_upstream, sasl_env(mechanism, "cmn-gateway", USERS["cmn-gateway"]))
    security = KafkaSecurity("SASL_PLAINTEXT", mechanism, "cmn-client", USERS["cmn-client"])  # type: ignore[arg-type]
    client = GatewayClient.kafka(bootstrap, security=security, topic=gateway.settings.requests_queue)
    body = await round_trip(gateway, client)
    assert body["path"] == "/secured" and orjson.loads(body["body"]) == {"n": 1}
    users = {(m, u) for m, u, accepted in sasl_kafka.logins if accepted}
    assert users == {(mechanism, "cmn-gateway"), (mechanism, "cmn-client")}
    assert all(accepted for _, _, accepted in sasl_kafka.logins)


async def test_gateway_with_a_wrong_password_fails_to_start_without_echoing_it(
    sasl_kafka: KafkaFront, echo_upstream: Upstream
) -> None:
    gateway = gateway_for(
        f"127.0.0.1:{sasl_kafka.port}", echo_upstream, sasl_env("SCRAM-SHA-512", "cmn-gateway", WRONG)
    )
    with pytest.raises(KafkaLoginRefusedError) as caught:
        async with gateway:
            pass
    assert "'cmn-gateway'" in str(caught.value) and WRONG not in str(caught.value)
    assert ("SCRAM-SHA-512", "cmn-gateway", False) in sasl_kafka.logins


@pytest.fixture
def broker_certs(tmp_path: Path) -> tuple[DevCertificateAuthority, Path]:
    ca = DevCertificateAuthority.create(now=time.time())
    ca_file = tmp_path / "kafka-ca.pem"
    ca_file.write_bytes(ca.ca_pem)
    return ca, ca_file


async def test_sasl_ssl_with_a_ca_file_serves_a_request(
    broker_certs: tuple[DevCertificateAuthority, Path], echo_upstream: Upstream
) -> None:
    ca, ca_file = broker_certs
    tls = server_context(ca.issue("broker", ["127.0.0.1"], now=time.time()))
    async with kafka_behind_front(users=USERS, ssl_context=tls) as (_, front):
        bootstrap = f"127.0.0.1:{front.port}"
        env = {
            **sasl_env("SCRAM-SHA-256", "cmn-gateway", USERS["cmn-gateway"], "SASL_SSL"),
            "KAFKA_SSL_CA_FILE": ca_file,
        }
        gateway = gateway_for(bootstrap, echo_upstream, env)
        trust = client_context(TlsSettings(ca_file=str(ca_file)))
        security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "cmn-client", USERS["cmn-client"], ssl_context=trust)
        client = GatewayClient.kafka(bootstrap, security=security, topic=gateway.settings.requests_queue)
        body = await round_trip(gateway, client)
    assert body["path"] == "/secured"
    assert {u for _, u, accepted in front.logins if accepted} == {"cmn-gateway", "cmn-client"}


async def test_ssl_refuses_a_broker_the_ca_does_not_vouch_for(
    broker_certs: tuple[DevCertificateAuthority, Path], echo_upstream: Upstream
) -> None:
    ca, _ = broker_certs
    tls = server_context(ca.issue("broker", ["127.0.0.1"], now=time.time()))
    async with kafka_behind_front(ssl_context=tls) as (_, front):
        gateway = gateway_for(f"127.0.0.1:{front.port}", echo_upstream, {"KAFKA_SECURITY_PROTOCOL": "SSL"})
        with pytest.raises(KafkaUnavailableError, match="SSL"):
            async with gateway:  # system trust store: the development CA is not in it
                pass


async def test_ssl_presents_the_client_certificate_named_under_certificates(
    broker_certs: tuple[DevCertificateAuthority, Path], echo_upstream: Upstream, tmp_path: Path
) -> None:
    """mTLS: the front requires a client certificate from the development CA; the gateway presents the
    one KAFKA_SSL_CERTIFICATE names, served by the certificate manager from a `source: file` item."""
    ca, ca_file = broker_certs
    now = time.time()
    tls = server_context(ca.issue("broker", ["127.0.0.1"], now=now), client_ca_pem=ca.ca_pem)
    cert, key = write_leaf(tmp_path / "client", ca.issue("kafka-client", [], now=now, common_name="cmn-gateway"))
    certificates = {"items": {"kafka-client": {"source": "file", "cert": str(cert), "key": str(key)}}}
    async with kafka_behind_front(ssl_context=tls) as (_, front):
        bootstrap = f"127.0.0.1:{front.port}"
        env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": ca_file, "KAFKA_SSL_CERTIFICATE": "kafka-client"}
        gateway = gateway_for(bootstrap, echo_upstream, env, certificates=certificates)
        client_tls = client_context(TlsSettings(ca_file=str(ca_file)), certificate=ca.issue("client", [], now=now))
        client = GatewayClient.kafka(
            bootstrap, security=KafkaSecurity("SSL", ssl_context=client_tls), topic=gateway.settings.requests_queue
        )
        body = await round_trip(gateway, client)
        assert body["path"] == "/secured"
        without = gateway_for(
            bootstrap, echo_upstream, {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": ca_file}
        )
        with pytest.raises(KafkaUnavailableError):
            async with without:  # same CA, no client certificate: the front refuses the handshake
                pass


# -- the CLI builds its client from the same settings -----------------------------------------------
async def cmn(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cmn_request_logs_in_with_the_sasl_settings(sasl_kafka: KafkaFront, echo_upstream: Upstream) -> None:
    bootstrap = f"127.0.0.1:{sasl_kafka.port}"
    gateway = gateway_for(bootstrap, echo_upstream, sasl_env("SCRAM-SHA-512", "cmn-gateway", USERS["cmn-gateway"]))
    async with gateway:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CMN_REQUESTS_QUEUE": gateway.settings.requests_queue,
            **sasl_env("SCRAM-SHA-512", "cmn-client", USERS["cmn-client"]),
        }
        code, out, err = await cmn("request", "echo", "GET", "/from-cli", env=env)
        assert code == 0, err
        assert orjson.loads(out)["json"]["path"] == "/from-cli"
        code, out, err = await cmn("request", "echo", "GET", "/", env={**env, "KAFKA_SASL_PASSWORD": WRONG})
    assert code == 1 and "refused the login" in err and "cmn-client" in err
    assert WRONG not in out + err
    assert ("SCRAM-SHA-512", "cmn-client", True) in sasl_kafka.logins


async def _never_called(delivery: Any) -> None:
    raise AssertionError(f"no delivery expected: {delivery!r}")


async def test_a_late_starter_learns_forced_breakers_over_sasl_ssl(
    broker_certs: tuple[DevCertificateAuthority, Path], echo_upstream: Upstream
) -> None:
    """The late starter's question to its peers goes out with the gateway's own Kafka security
    (gateway.wiring.build_kafka_security), TLS included, like its transport and control channel."""
    ca, ca_file = broker_certs
    tls = server_context(ca.issue("broker", ["127.0.0.1"], now=time.time()))
    async with kafka_behind_front(users=USERS, ssl_context=tls) as (_, front):
        bootstrap = f"127.0.0.1:{front.port}"
        env = {
            **sasl_env("SCRAM-SHA-256", "cmn-gateway", USERS["cmn-gateway"], "SASL_SSL"),
            "KAFKA_SSL_CA_FILE": ca_file,
        }
        first = gateway_for(bootstrap, echo_upstream, {**env, "CMN_INSTANCE": unique("early")})
        async with first:
            answer = first.force_breakers("echo", "open", principal="ops", duration=600)
            assert answer["ok"], answer
            late = gateway_for(bootstrap, echo_upstream, {**env, "CMN_INSTANCE": unique("late")})
            async with late:
                loop = asyncio.get_running_loop()
                end = loop.time() + 20
                while not late.forced_breakers():
                    assert loop.time() < end, "the late starter never learned the forced state"
                    await asyncio.sleep(0.1)
                [learned] = late.forced_breakers()
                [original] = first.forced_breakers()
    assert learned["state"] == "open" and learned["by"] == "ops"
    assert abs(learned["until"] - original["until"]) < 1.0
    assert front.logins and all(accepted for _, _, accepted in front.logins)
