"""What the deployment files promise each other: the NetworkPolicy admits every example upstream's
port, the image tag is the package version everywhere, and the lock pins every runtime dependency."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.manifests import k8s_documents
from tests.deploy.tools import only

REPO = Path(__file__).resolve().parents[2]
FENCED_YAML = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def example_documents() -> list[dict[str, Any]]:
    """Every upstreams file a user may copy: the deploy examples and the README's YAML blocks."""
    docs = [yaml.safe_load(p.read_text()) for p in (REPO / "deploy" / "upstreams.example.yaml",
                                                     REPO / "deploy" / "k8s" / "upstreams.yaml")]  # fmt: skip
    for block in FENCED_YAML.findall((REPO / "README.md").read_text()):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and isinstance(data.get("upstreams"), dict):
            docs.append(data)
    return docs


def endpoint_ports() -> set[int]:
    ports = set()
    for document in example_documents():
        for upstream in document["upstreams"].values():
            for endpoint in upstream.get("endpoints", []):
                url = urlsplit(endpoint if isinstance(endpoint, str) else endpoint["url"])
                ports.add(url.port or (443 if url.scheme == "https" else 80))
    return ports


def egress_ports() -> set[int]:
    policy = only(k8s_documents(), "NetworkPolicy")
    return {
        int(p["port"]) for rule in policy["spec"]["egress"] for p in rule.get("ports", []) if p["protocol"] == "TCP"
    }


def test_the_network_policy_admits_every_example_upstream_port() -> None:
    needed = endpoint_ports()
    assert {443, 8443} <= needed  # the README's example upstream is on 8443
    missing = needed - egress_ports()
    assert not missing, f"deploy/k8s/networkpolicy.yaml blocks the example upstreams on ports {sorted(missing)}"


def test_every_image_reference_carries_the_package_version() -> None:
    version = metadata.version("cmn-gateway")
    texts = [p.read_text() for p in (*sorted((REPO / "deploy" / "k8s").glob("*.yaml")), REPO / "docker-compose.yml")]
    tags = re.findall(r"ariesone/cmn-service:([\w.-]+)", "\n".join(texts))
    assert tags and set(tags) == {version}
    assert f"newTag: {version}" in (REPO / "deploy" / "k8s" / "kustomization.yaml").read_text()
    assert f"ariesone/cmn-service:{version}" in (REPO / "Dockerfile").read_text()


def locked() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    return {canonicalize_name(name): Version(version) for name, version in pins}


def test_the_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: regenerate it"
        assert requirement.specifier.contains(pins[name]), f"requirements.lock pins {name} {pins[name]}, not {spec}"
    text = (REPO / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[3])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block), "every pin needs its hashes"


def test_the_dockerfile_installs_from_the_lock_with_hashes() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile  # the gateway adds nothing unpinned
