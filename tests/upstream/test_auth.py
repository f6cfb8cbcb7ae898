"""Endpoint credentials: never in the URL; ``auth:`` resolved once and set by the router on every attempt."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.app import load_config
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.events import RecordingObserver
from gateway.secrets import SecretResolver
from gateway.settings import describe_validation_error, load_settings
from gateway.upstream.auth import Credential, resolve_upstream_auth
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from gateway.upstream.health import HealthChecker, HealthPolicy
from gateway.upstream.host import Host
from gateway.upstream.http import Exchange
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import outbound, upstreams

PASSWORD = "hunter2-Sup3rS3cret"
TOKEN = "tok-0f8e2b7c9a"


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@127.0.0.1:8080/api",
        f"https://svc:{PASSWORD}@pay.internal",
        "http://user@127.0.0.1:8080",
        f"http://:{PASSWORD}@127.0.0.1",
        f"http://user:{PASSWORD}@",  # unparseable as well: still refused for its credentials, not quoted
        f"http://us er:{PASSWORD}@h",
    ],
)
def test_an_endpoint_url_with_credentials_is_refused_without_quoting_it(url: str) -> None:
    document = {"upstreams": {"payments": {"endpoints": [url]}}}
    with pytest.raises(ConfigError) as caught:
        load_config(load_settings(ENABLE_METRICS=False), document)
    message = caught.value.message
    assert message.startswith("invalid configuration: upstreams.payments.endpoints.0.url:")
    assert "may not carry credentials" in message
    assert "auth: {bearer: {env: VAR}}" in message
    assert "auth: {basic: {username: u, password: {env: VAR}}}" in message
    assert PASSWORD not in message and "user" not in message.split("auth:")[0]
    # The chained pydantic error (what a traceback would print) does not quote the input either.
    cause = caught.value.__cause__
    assert isinstance(cause, ValidationError)
    assert PASSWORD not in str(cause) and url not in str(cause)


def test_the_message_goes_through_describe_validation_error_unchanged() -> None:
    with pytest.raises(ValidationError) as caught:
        upstreams(svc={"endpoints": [{"url": f"http://u:{PASSWORD}@h", "weight": 2}]})
    text = describe_validation_error(caught.value, "upstreams")
    assert text.startswith("invalid configuration: upstreams.svc.endpoints.0.url: ")
    assert PASSWORD not in text


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        ({}, "exactly one of bearer, basic or header"),
        ({"bearer": {"env": "A"}, "header": {"name": "X-Api-Key", "value": {"env": "B"}}}, "exactly one"),
        ({"bearer": {"env": "A", "file": "/x"}}, "exactly one of {env: VAR}"),
        ({"bearer": "literal-token"}, "auth.bearer"),  # a secret is never written in the file
        ({"basic": {"username": "a:b", "password": {"env": "P"}}}, "auth.basic.username"),
        ({"header": {"name": "X Api", "value": {"env": "V"}}}, "auth.header.name"),
        ({"header": {"name": "Content-Length", "value": {"env": "V"}}}, "frames the HTTP message"),
        ({"header": {"name": "host", "value": {"env": "V"}}}, "frames the HTTP message"),
    ],
)
def test_bad_auth_blocks_are_configuration_errors(auth: dict[str, Any], fragment: str) -> None:
    document = {"upstreams": {"svc": {"endpoints": ["http://127.0.0.1:8080"], "auth": auth}}}
    with pytest.raises(ConfigError) as caught:
        load_config(load_settings(ENABLE_METRICS=False), document)
    assert fragment in caught.value.message
    assert "literal-token" not in caught.value.message


async def test_each_kind_of_auth_resolves_to_one_header(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(f"{PASSWORD}\n")
    config = upstreams(
        bearer={"endpoints": ["http://a"], "auth": {"bearer": {"env": "SVC_TOKEN"}}},
        basic={
            "endpoints": ["http://b"],
            "auth": {"basic": {"username": "cmn", "password": {"file": str(secret_file)}}},
        },
        header={"endpoints": ["http://c"], "auth": {"header": {"name": "X-Api-Key", "value": {"env": "SVC_KEY"}}}},
        open={"endpoints": ["http://d"]},
    )
    resolver = SecretResolver(environ={"SVC_TOKEN": TOKEN, "SVC_KEY": "key-123"})
    credentials = await resolve_upstream_auth(config, resolver)
    assert sorted(credentials) == ["basic", "bearer", "header"]
    assert (credentials["bearer"].name, credentials["bearer"].value) == ("authorization", f"Bearer {TOKEN}")
    pair = base64.b64encode(f"cmn:{PASSWORD}".encode()).decode()
    assert (credentials["basic"].name, credentials["basic"].value) == ("authorization", f"Basic {pair}")
    assert (credentials["header"].name, credentials["header"].value) == ("x-api-key", "key-123")


async def test_a_credential_never_shows_in_a_repr() -> None:
    config = upstreams(svc={"endpoints": ["http://a"], "auth": {"bearer": {"env": "SVC_TOKEN"}}})
    credential = (await resolve_upstream_auth(config, SecretResolver(environ={"SVC_TOKEN": TOKEN})))["svc"]
    assert repr(credential) == str(credential) == "<Credential authorization from bearer env:SVC_TOKEN>"
    assert TOKEN not in repr({"svc": credential})
    exchange = Exchange("GET", "http://a/", credential.apply({}), None, 1.0, 1.0, 1024)
    assert TOKEN not in repr(exchange)


def test_applying_a_credential_drops_every_spelling_of_the_callers_header() -> None:
    credential = Credential("authorization", f"Bearer {TOKEN}", "bearer env:SVC_TOKEN")
    forged = {"Authorization": "Bearer a", "AUTHORIZATION": "Bearer b", "authorization": "c", "X-Other": "y"}
    assert credential.apply(forged) == {"X-Other": "y", "authorization": f"Bearer {TOKEN}"}
    assert forged["Authorization"] == "Bearer a"  # the caller's mapping is left as it was


async def test_missing_and_unusable_secrets_stop_start_up_without_showing_them() -> None:
    config = upstreams(svc={"endpoints": ["http://a"], "auth": {"bearer": {"env": "SVC_TOKEN"}}})
    with pytest.raises(ConfigError, match="upstream svc auth: environment variable SVC_TOKEN is not set"):
        await resolve_upstream_auth(config, SecretResolver(environ={}))
    injected = f"{TOKEN}\r\nX-Admin: yes"
    with pytest.raises(ConfigError) as caught:
        await resolve_upstream_auth(config, SecretResolver(environ={"SVC_TOKEN": injected}))
    assert caught.value.message == (
        "upstream svc auth: secret env:SVC_TOKEN holds a line break or NUL, which no header may carry"
    )


def test_an_upstream_with_auth_is_never_built_without_its_credential() -> None:
    config = upstreams(svc={"endpoints": ["http://a"], "auth": {"bearer": {"env": "SVC_TOKEN"}}})
    with pytest.raises(ConfigError, match="upstreams svc have auth: but no resolved credential"):
        build_forwarder(config, UpstreamDefaults(), clock=SystemClock(), observer=RecordingObserver())


def header_recorder(seen: list[list[str]], statuses: list[int]) -> web.Application:
    """Records every Authorization header value of each request; answers the next status in ``statuses``."""

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.getall("Authorization", []) + request.headers.getall("X-Api-Key", []))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def forwarder_with(auth: dict[str, Any], url: str, environ: dict[str, str]) -> GatewayForwarder:
    config = upstreams(svc={"endpoints": [url], "auth": auth, "retry": {"attempts": 3, "backoff_base": 0.001}})
    credentials = await resolve_upstream_auth(config, SecretResolver(environ=environ))
    return build_forwarder(
        config, UpstreamDefaults(), clock=SystemClock(), observer=RecordingObserver(), credentials=credentials
    )


async def test_the_router_sets_the_credential_on_every_attempt_over_the_callers(
    start_upstream: StartUpstream,
) -> None:
    seen: list[list[str]] = []
    upstream = await start_upstream(header_recorder(seen, [503, 503]))
    fwd = await forwarder_with({"bearer": {"env": "SVC_TOKEN"}}, upstream.url, {"SVC_TOKEN": TOKEN})
    async with fwd:
        forged = {"Authorization": "Bearer caller-chosen", "authorization": "Basic Y2FsbGVyOng="}
        response = await fwd.forward(outbound("svc", headers=forged))
    assert response.status == 200 and response.attempts == 3
    assert seen == [[f"Bearer {TOKEN}"]] * 3  # retries carry it too, and only it


async def test_a_header_credential_replaces_a_caller_header_of_that_name(start_upstream: StartUpstream) -> None:
    seen: list[list[str]] = []
    upstream = await start_upstream(header_recorder(seen, []))
    auth = {"header": {"name": "X-Api-Key", "value": {"env": "SVC_KEY"}}}
    async with await forwarder_with(auth, upstream.url, {"SVC_KEY": "key-123"}) as fwd:
        await fwd.forward(outbound("svc", headers={"x-api-key": "mine", "Authorization": "Bearer passes"}))
    assert seen == [["Bearer passes", "key-123"]]  # other headers pass untouched


async def test_without_auth_the_callers_authorization_passes_through(start_upstream: StartUpstream) -> None:
    seen: list[list[str]] = []
    upstream = await start_upstream(header_recorder(seen, []))
    fwd = build_forwarder(
        upstreams(svc={"endpoints": [upstream.url]}),
        UpstreamDefaults(),
        clock=SystemClock(),
        observer=RecordingObserver(),
    )
    async with fwd:
        await fwd.forward(outbound("svc", headers={"Authorization": "Bearer callers-own"}))
    assert seen == [["Bearer callers-own"]]


async def test_health_probes_of_an_upstream_behind_auth_carry_its_credential(start_upstream: StartUpstream) -> None:
    async def guarded(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.headers.get("Authorization") == f"Bearer {TOKEN}" else 401)

    app = web.Application()
    app.router.add_get("/healthz", guarded)
    upstream = await start_upstream(app)
    config = upstreams(svc={"endpoints": [upstream.url], "auth": {"bearer": {"env": "SVC_TOKEN"}}})
    credential = (await resolve_upstream_auth(config, SecretResolver(environ={"SVC_TOKEN": TOKEN})))["svc"]
    policy = HealthPolicy(path="/healthz", unhealthy_threshold=1)
    verdicts = []
    for given in (credential, None):
        host = Host(upstream.url)
        checker = HealthChecker(
            "svc", [host], policy, clock=SystemClock(), observer=RecordingObserver(), credential=given
        )
        await checker.check_all()
        await checker.aclose()
        verdicts.append(host.healthy)
    assert verdicts == [True, False]  # without it the upstream answers 401 and the probe fails
