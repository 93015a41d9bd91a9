"""`segmentation-healthcheck` as the image's HEALTHCHECK and an exec probe run it: beside a
real server, with that server's own SEGMENTATION_* settings and no argument, over plaintext,
TLS, and (through the plaintext health-only port on 127.0.0.1) mutual TLS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from loadtest.local_server import free_port
from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from service.app import running_server
from service.config import ServiceConfig
from tests.certificates import CertificateAuthority

HEALTHCHECK = Path(sys.executable).parent / "segmentation-healthcheck"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    # A name other than localhost: the healthcheck must check the certificate's own name.
    server = server_ca.issue("segmentation.calls.svc", server=True)
    files = {
        "cert": server.certificate_pem + server_ca.pem,  # the chain, as cert-manager writes it
        "key": server.key_pem,
        "client_ca": client_ca.pem,
    }
    for name, pem in files.items():
        (folder / f"{name}.pem").write_bytes(pem)
    return {name: str(folder / f"{name}.pem") for name in files}


def server_settings(**settings: str) -> dict[str, str]:
    """A server's environment, as its pod's manifest gives it."""
    base = {
        "ADDRESS": f"0.0.0.0:{free_port()}",
        "METRICS_PORT": "-1",
        "ENGINE": "tflite",
        "MODELS": "selfie-general",
    }
    return {f"SEGMENTATION_{name}": value for name, value in {**base, **settings}.items()}


async def healthcheck(environ: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Runs the healthcheck as the image does: no argument, the server's environment only."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(HEALTHCHECK), *argv],
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def check_serving_then_draining(environ: dict[str, str]) -> str:
    config = ServiceConfig.from_args([], environ)
    async with running_server(config) as service:
        serving = await healthcheck(environ)
        liveness = await healthcheck(environ, "--service", "liveness")
        await service.readiness.set_draining()
        draining = await healthcheck(environ)
        assert liveness.returncode == 0, liveness.stderr
    assert serving.returncode == 0, serving.stderr
    assert serving.stdout.strip().endswith(": SERVING")
    assert draining.returncode == 1 and "NOT_SERVING" in draining.stderr
    return serving.stdout.strip()


async def test_the_healthcheck_checks_a_plaintext_server() -> None:
    print(f"\n{await check_serving_then_draining(server_settings())}")


async def test_the_healthcheck_speaks_tls_with_the_servers_own_settings(
    pki: dict[str, str],
) -> None:
    environ = server_settings(TLS_CERT_FILE=pki["cert"], TLS_KEY_FILE=pki["key"])
    print(f"\n{await check_serving_then_draining(environ)}")


async def test_under_mutual_tls_the_healthcheck_asks_the_health_only_port(
    pki: dict[str, str],
) -> None:
    environ = server_settings(
        TLS_CERT_FILE=pki["cert"],
        TLS_KEY_FILE=pki["key"],
        TLS_CLIENT_CA_FILE=pki["client_ca"],
        HEALTH_PORT=str(free_port()),
    )
    line = await check_serving_then_draining(environ)
    assert line.startswith(f"127.0.0.1:{environ['SEGMENTATION_HEALTH_PORT']}:")


async def test_the_health_only_port_serves_health_alone_on_loopback() -> None:
    environ = server_settings(HEALTH_PORT="0")
    async with running_server(ServiceConfig.from_args([], environ)) as service:
        target = f"127.0.0.1:{service.health_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.SegmentationServiceStub(channel).ListModels(pb.ListModelsRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_under_mutual_tls_without_the_health_port_it_says_what_to_set(
    pki: dict[str, str],
) -> None:
    environ = server_settings(
        TLS_CERT_FILE=pki["cert"], TLS_KEY_FILE=pki["key"], TLS_CLIENT_CA_FILE=pki["client_ca"]
    )
    result = await healthcheck(environ)
    assert result.returncode == 1
    assert "mutual TLS is on" in result.stderr and "SEGMENTATION_HEALTH_PORT" in result.stderr


async def test_a_target_given_is_asked_even_with_the_health_only_port_on() -> None:
    environ = server_settings()
    async with running_server(ServiceConfig.from_args([], environ)) as service:
        # The settings name a health-only port where nothing listens: only --target reaches.
        beside = {**environ, "SEGMENTATION_HEALTH_PORT": str(free_port())}
        asked = await healthcheck(beside, "--target", service.target)
        default = await healthcheck(beside)
    assert asked.returncode == 0 and asked.stdout.strip() == f"{service.target}: SERVING"
    assert default.returncode == 1 and "UNAVAILABLE" in default.stderr


async def test_with_tls_the_name_given_is_the_one_checked_in_the_certificate(
    pki: dict[str, str],
) -> None:
    environ = server_settings(TLS_CERT_FILE=pki["cert"], TLS_KEY_FILE=pki["key"])
    async with running_server(ServiceConfig.from_args([], environ)):
        right = await healthcheck(environ, "--server-name", "localhost")  # its DNS name
        wrong = await healthcheck(environ, "--server-name", "elsewhere.example")
    assert right.returncode == 0, right.stderr
    assert wrong.returncode == 1 and "UNAVAILABLE" in wrong.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [("many", "expected an integer; was 'many'"), ("-3", "max_streams must be positive")],
)
async def test_a_bad_setting_is_one_line_naming_its_variable(value: str, says: str) -> None:
    result = await healthcheck(server_settings(MAX_STREAMS=value))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"segmentation-healthcheck: the server's setting SEGMENTATION_MAX_STREAMS: {says}"
        + ("; was -3" if value == "-3" else "")
    ], result.stderr
