"""The CPU image with TLS on, run as the TLS manifests run it: its own HEALTHCHECK, unchanged,
turns healthy over TLS with the container's SEGMENTATION_* settings, and under mutual TLS
through the plaintext health-only port on 127.0.0.1; clients reach it over TLS only."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from segmentation_client import SegmentationClient
from tests import podman
from tests.certificates import CertificateAuthority
from tests.cpu_image import (
    Container,
    as_kubernetes_runs_it,
    build_cpu_image,
    published_port,
    start_container,
)
from tests.photos import astronaut_jpeg

pytestmark = pytest.mark.timeout(1800)
SECRETS = "/etc/segmentation/tls"


@pytest.fixture(scope="module")
def image() -> str:
    return build_cpu_image(lambda line: None)  # the image test reports the build


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The Secrets' files, readable by the image's user (uid 10001), as a Secret volume is."""
    folder = tmp_path_factory.mktemp("tls")
    folder.chmod(0o755)
    server_ca, client_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    server, client = server_ca.issue("localhost", server=True), client_ca.issue("media", False)
    files = {"tls.crt": server.certificate_pem, "tls.key": server.key_pem, "ca.crt": client_ca.pem}
    for name, pem in files.items():
        (folder / name).write_bytes(pem)
        (folder / name).chmod(0o644)
    pems = {"server_ca": server_ca.pem, "client_cert": client.certificate_pem,
            "client_key": client.key_pem}  # fmt: skip
    return folder, pems


def _run_with_tls(image: str, name: str, folder: Path, *settings: str) -> Container:
    flags = [
        *as_kubernetes_runs_it(), f"--volume={folder}:{SECRETS}:ro",
        f"--env=SEGMENTATION_TLS_CERT_FILE={SECRETS}/tls.crt",
        f"--env=SEGMENTATION_TLS_KEY_FILE={SECRETS}/tls.key",
        "--env=SEGMENTATION_MODELS=selfie-general", "--publish=127.0.0.1::50051",
        *(f"--env={setting}" for setting in settings),
    ]  # fmt: skip
    container = start_container(image, name, *flags)
    container.target = published_port(name, 50051)
    return container


async def test_the_image_turns_healthy_with_tls_and_mutual_tls_on(
    image: str, secrets: tuple[Path, dict[str, bytes]]
) -> None:
    folder, pems = secrets
    suffix = os.getpid()
    started = []
    try:
        tls = _run_with_tls(image, f"segmentation-test-tls-{suffix}", folder)
        started.append(tls)
        mutual = _run_with_tls(
            image, f"segmentation-test-mtls-{suffix}", folder,
            f"SEGMENTATION_TLS_CLIENT_CA_FILE={SECRETS}/ca.crt", "SEGMENTATION_HEALTH_PORT=50052",
        )  # fmt: skip
        started.append(mutual)
        for container, transport in ((tls, "TLS"), (mutual, "mutual TLS")):
            seconds = container.wait_until_healthy()
            print(f"\n{container.name}: HEALTHCHECK healthy with {transport} on ({seconds:.0f} s)")
            assert f"listening on 0.0.0.0:50051, {transport}" in container.logs()
        async with SegmentationClient(tls.target, root_certificates=pems["server_ca"]) as client:
            assert (await client.segment(astronaut_jpeg())).mask.data
        async with SegmentationClient(
            mutual.target, root_certificates=pems["server_ca"],
            client_certificate=pems["client_cert"], client_key=pems["client_key"],
        ) as client:  # fmt: skip
            assert (await client.segment(astronaut_jpeg())).mask.data
        async with SegmentationClient(tls.target) as plaintext:
            with pytest.raises(Exception) as refused:
                await plaintext.segment(astronaut_jpeg(), timeout_s=5)
        assert getattr(refused.value, "code", None) in (
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
        )  # fmt: skip
    finally:
        for container in started:
            podman.podman("rm", "--force", "--time=0", container.name, check=False)
