"""amqps with the contexts gateway.tls builds: a private RabbitMQ node with a TLS 1.3 listener that
requires client certificates from the development CA."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from gateway.bus.rabbitmq.connection import connect
from gateway.certs.bundle import CertificateBundle
from gateway.certs.devca import DevCertificateAuthority, write_leaf
from gateway.errors import ConfigError
from gateway.tls import client_context
from tests.bus.rabbitmq.node import RabbitNode
from tests.fixtures.upstreams import free_port


class TlsRabbitNode(RabbitNode):
    """The private node with an extra amqps listener (mutual TLS, 1.3 only)."""

    def __init__(self, base_dir: Path, ca: DevCertificateAuthority) -> None:
        self.ca = ca
        self.tls_port = free_port()
        super().__init__(base_dir)

    @property
    def tls_url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/"

    def _prepare(self) -> dict[str, str]:
        env = super()._prepare()
        server = self.ca.issue("rabbit", ["127.0.0.1", "localhost"], now=time.time())
        files = {"ca.pem": self.ca.ca_pem, "server.pem": server.chain_pem(), "server-key.pem": server.key_pem()}
        for name, data in files.items():
            (self.base_dir / name).write_bytes(data)
        with (self.base_dir / "rabbitmq.conf").open("a") as config:
            config.write(
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {self.base_dir / 'ca.pem'}\n"
                f"ssl_options.certfile = {self.base_dir / 'server.pem'}\n"
                f"ssl_options.keyfile = {self.base_dir / 'server-key.pem'}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
                "ssl_options.versions.1 = tlsv1.3\n"
            )
        return env


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbitNode]:
    node = TlsRabbitNode(tmp_path_factory.mktemp("rabbit-tls"), DevCertificateAuthority.create(now=time.time()))
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _client(node: TlsRabbitNode) -> CertificateBundle:
    return node.ca.issue("gateway", ["gateway"], now=time.time())


async def test_amqps_with_a_client_certificate(tls_node: TlsRabbitNode) -> None:
    context = client_context(certificate=_client(tls_node), ca_pem=tls_node.ca.ca_pem)
    connection = await aio_pika.connect(tls_node.tls_url, ssl_context=context)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"over tls"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.body == b"over tls"


async def test_amqps_without_a_client_certificate_is_refused(tls_node: TlsRabbitNode) -> None:
    context = client_context(ca_pem=tls_node.ca.ca_pem)
    with pytest.raises((ConnectionError, OSError)):
        await aio_pika.connect(tls_node.tls_url, ssl_context=context)


async def test_amqps_server_must_be_trusted(tls_node: TlsRabbitNode) -> None:
    stranger = DevCertificateAuthority.create(now=time.time())
    context = client_context(certificate=_client(tls_node), ca_pem=stranger.ca_pem)
    with pytest.raises((ConnectionError, OSError)) as caught:
        await aio_pika.connect(tls_node.tls_url, ssl_context=context)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value) or "certificate verify failed" in str(caught.value)


async def test_gateway_amqps_connections_take_the_url_settings_through_the_one_builder(
    tls_node: TlsRabbitNode, tmp_path: Path
) -> None:
    """What RabbitTransport and the SDK's requester call: cafile/certfile/keyfile from the URL, the
    context from gateway.tls (aiormq's own would accept the options the builder refuses)."""
    cert, key = write_leaf(tmp_path / "client", _client(tls_node))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls_node.ca.ca_pem)
    url = f"{tls_node.tls_url}?cafile={ca_file}&certfile={cert}&keyfile={key}"
    connection = await connect(url, ssl_context=None, reconnect_interval=1.0, name="cmn-amqps-test")
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"amqps"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"amqps"
    finally:
        await connection.close()
    with pytest.raises(ConfigError, match="no_verify_ssl is not supported"):
        await connect(f"{url}&no_verify_ssl=1", ssl_context=None, reconnect_interval=1.0, name="cmn-amqps-test")
