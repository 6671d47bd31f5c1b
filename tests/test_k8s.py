"""deploy/k8s/*.yaml against the Kubernetes API schemas of every version README supports, offline.

kubernetes-validate (PyPI) ships the OpenAPI-derived JSON schemas of each Kubernetes minor
version inside the package; strict mode also refuses fields a version does not know, which is
what catches a misspelt key or a field newer than the cluster. README states the oldest
supported version ("Kubernetes 1.29+", native sidecars); every minor from there to the newest
the package ships is checked.
"""

from __future__ import annotations

import copy
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from forwarder.rules.remote import ENV_FIELDS

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
DOWNWARD = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName"}


def claimed_versions() -> list[str]:
    """Every minor version from README's 'Kubernetes 1.N+' to the newest kubernetes-validate knows."""
    claims = {int(m) for m in re.findall(r"Kubernetes 1\.(\d+)\+", (ROOT / "README.md").read_text())}
    assert claims, "README states no supported Kubernetes version"
    oldest = min(claims)
    newest = max(int(v.split(".")[1]) for v in all_versions())
    assert newest >= oldest
    return [f"1.{minor}" for minor in range(oldest, newest + 1)]


VERSIONS = claimed_versions()


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to reach the network fails the test: the schemas must come from the package."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_readme_claims_versions_the_validator_covers() -> None:
    assert VERSIONS[0] == "1.29"  # native sidecars (restartPolicy: Always init containers): beta, on by default
    assert len(VERSIONS) >= 5
    assert {p.name for p in MANIFESTS} >= {"sidecar.yaml", "daemonset.yaml", "secret.example.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_every_supported_version(version: str, offline: None) -> None:
    checked = 0
    for path in MANIFESTS:
        for doc in documents(path):
            used = kubernetes_validate.validate(doc, version, strict=True)
            assert used == version, f"{path.name}: validated against {used}, not {version}"
            checked += 1
    assert checked == len(MANIFESTS)


def forwarder_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc["spec"]["template"]["spec"]
    return [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "statsig-forwarder"]


def test_the_validator_refuses_what_a_cluster_would(offline: None) -> None:
    """The check can fail: a misspelt field, a wrong type, an unknown restartPolicy are refused."""
    sidecar = documents(K8S / "sidecar.yaml")[0]
    kubernetes_validate.validate(sidecar, VERSIONS[0], strict=True)
    broken = copy.deepcopy(sidecar)
    (fwd,) = forwarder_containers(broken)
    fwd["restartPolicys"] = fwd.pop("restartPolicy")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    broken = copy.deepcopy(sidecar)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    broken = copy.deepcopy(sidecar)
    (fwd,) = forwarder_containers(broken)
    fwd["env"][0]["valueFrom"] = {"fieldReference": {"fieldPath": "metadata.name"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_native_sidecar_form() -> None:
    pod = documents(K8S / "sidecar.yaml")[0]["spec"]["template"]["spec"]
    assert [c["restartPolicy"] for c in pod["initContainers"] if c["name"] == "statsig-forwarder"] == ["Always"]


@pytest.mark.parametrize("name", ["sidecar.yaml", "daemonset.yaml"])
def test_downward_api_names_the_forwarder_for_remote_rules(name: str) -> None:
    """POD_NAME, POD_NAMESPACE and NODE_NAME, the variables forwarder/rules/remote.py reads."""
    assert set(DOWNWARD) == set(ENV_FIELDS.values())
    (doc,) = documents(K8S / name)
    (fwd,) = forwarder_containers(doc)
    env = {e["name"]: e for e in fwd["env"]}
    for var, field in DOWNWARD.items():
        assert env[var]["valueFrom"] == {"fieldRef": {"fieldPath": field}}, var


def test_every_workload_manifest_runs_a_forwarder_with_the_downward_api() -> None:
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
                (fwd,) = forwarder_containers(doc)
                assert set(DOWNWARD) <= {e["name"] for e in fwd["env"]}, path.name
