"""The manifests' probes and GPU sharing, checked offline: the TLS and mutual-TLS overlays
build and validate, probe with exec'd segmentation-healthcheck where the kubelet's plaintext
gRPC probe cannot reach, and set only settings the service knows; liveness is its own check;
the time-slicing ConfigMap for several pods per GPU is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.api.readiness import LIVENESS
from service.config import ENV_PREFIX, ServiceConfig

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32"
HEALTHCHECK = ["segmentation-healthcheck"]


def container_of(overlay: str) -> dict:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is missing: run `make test`, which installs it"
    output = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(output)}
    for kind, document in documents.items():
        if kind != "ServiceMonitor":  # a Prometheus-operator CRD
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    return documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def settings_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_plaintext_pods_probe_readiness_and_liveness_apart_over_grpc(overlay: str) -> None:
    container = container_of(overlay)
    assert "service" not in container["readinessProbe"]["grpc"]  # "": the whole server
    assert "service" not in container["startupProbe"]["grpc"]
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS


@pytest.mark.parametrize("overlay", ["cpu-tls", "cpu-mutual-tls"])
def test_tls_pods_probe_with_the_healthcheck_and_the_servers_own_settings(overlay: str) -> None:
    container = container_of(overlay)
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == HEALTHCHECK
    assert container["livenessProbe"]["exec"]["command"] == [*HEALTHCHECK, "--service", LIVENESS]
    settings = settings_of(container)
    known = {f"{ENV_PREFIX}{name.upper()}" for name in ServiceConfig.__dataclass_fields__}
    assert set(settings) <= known, set(settings) - known
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    for name in ("SEGMENTATION_TLS_CERT_FILE", "SEGMENTATION_TLS_KEY_FILE"):
        assert str(Path(settings[name]).parent) in mounts
    # The server refuses nothing of it: the same settings start it and the healthcheck.
    config = ServiceConfig.from_args([], settings)
    assert config.tls
    if overlay == "cpu-mutual-tls":
        assert config.tls_client_ca_file and config.health_port == 50052
        assert str(Path(config.tls_client_ca_file).parent) in mounts
    else:
        assert not config.tls_client_ca_file and config.health_port == -1


def test_the_time_slicing_config_shares_each_gpu_between_the_documented_number_of_pods() -> None:
    document = yaml.safe_load((KUBERNETES / "gpu-time-slicing.yaml").read_text())
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    sharing = yaml.safe_load(document["data"]["any"])["sharing"]["timeSlicing"]
    assert sharing["failRequestsGreaterThanOne"] is True
    assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "gpu-time-slicing.yaml" in operations and "4 processes per GPU" in operations
