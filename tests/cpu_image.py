"""The CPU image and its containers, as the tests of the image build and run them: with
podman (`tests/podman.py`), as the Kubernetes manifests run it or plainly."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests import podman

ROOT = Path(__file__).parent.parent
CPU_DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.cpu"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml"
CPU_TAG = "localhost/segmentation:cpu"


@dataclass
class Container:
    name: str
    target: str = ""  # the published gRPC port on the host's loopback
    metrics_url: str = ""

    def exec(self, *command: str, user: str | None = None) -> str:
        user_flag = [f"--user={user}"] if user else []
        return podman.podman("exec", *user_flag, self.name, *command).stdout

    def logs(self) -> str:
        result = podman.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_until_healthy(self, timeout_s: float = 180) -> float:
        """Runs the image's own HEALTHCHECK until it passes; returns the seconds it took."""
        started = time.monotonic()
        while podman.podman("healthcheck", "run", self.name, check=False).returncode != 0:
            state = podman.podman("inspect", "--format={{.State.Status}}", self.name).stdout
            assert state.strip() == "running", f"{self.name} {state.strip()}:\n{self.logs()}"
            assert time.monotonic() - started < timeout_s, f"never healthy:\n{self.logs()}"
            time.sleep(1)
        return time.monotonic() - started


def kubernetes_pod() -> tuple[dict, dict]:
    spec = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def as_kubernetes_runs_it() -> list[str]:
    """podman flags for the manifests' securityContext, volumes and environment."""
    pod, container = kubernetes_pod()
    flags = [f"--user={pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    security = container["securityContext"]
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # only the volumes below are writable
    if security.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    flags += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert "emptyDir" in volumes[mount["name"]], "only emptyDir volumes are mirrored"
        flags.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777")
    flags += [f"--env={item['name']}={item['value']}" for item in container["env"]]
    return flags


def build_cpu_image(report: Callable[[str], None]) -> str:
    """Builds the CPU image (and, once per machine, its base image's stand-in); its id."""
    missing = podman.missing_tools()
    assert not missing, f"{missing} missing: `make test` installs them (Debian packages)"
    started = time.monotonic()
    base = podman.base_image(CPU_DOCKERFILE)
    report(
        f"base image {base}: {podman.ensure_base_image(base)}, {time.monotonic() - started:.0f} s"
    )
    started = time.monotonic()
    image_id = podman.build_image(CPU_DOCKERFILE, CPU_TAG)
    report(
        f"CPU image {CPU_TAG} ({image_id[:12]}): {podman.image_size_mb(image_id):.0f} MB, "
        f"built in {time.monotonic() - started:.0f} s"
    )
    return image_id


def start_container(image: str, name: str, *flags: str) -> Container:
    podman.podman("rm", "--force", "--ignore", name)
    podman.podman("run", "--detach", f"--name={name}", *flags, image)
    return Container(name)


def published_port(name: str, port: int) -> str:
    mapping = podman.podman("port", name, f"{port}/tcp").stdout.split()[0]
    return mapping.replace("0.0.0.0", "127.0.0.1")
