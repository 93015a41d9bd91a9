"""TLS, mutual TLS and bearer tokens on the real server: the right credentials work, wrong or
missing ones are refused with the right status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segmentation.v1 import segmentation_pb2 as pb
from segmentation.v1 import segmentation_pb2_grpc as pb_grpc
from segmentation_client import FrameToSend, SegmentationClient, SegmentationError
from service.app import running_server
from service.config import ServiceConfig
from tests.certificates import CertificateAuthority
from tests.helpers import loopback_config
from tests.photos import astronaut_jpeg

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, stranger_ca = (
        CertificateAuthority(name) for name in ("server CA", "client CA", "stranger CA")
    )
    server = server_ca.issue("segmentation server", server=True)
    files = {
        "server_cert": server.certificate_pem,
        "server_key": server.key_pem,
        "client_ca": client_ca.pem,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return {
        "paths": paths,
        "server_ca": server_ca.pem,
        "stranger_ca": stranger_ca.pem,
        "client": client_ca.issue("media server", server=False),
        "stranger_client": stranger_ca.issue("intruder", server=False),
    }


async def segment_ok(client: SegmentationClient) -> None:
    response = await client.segment(astronaut_jpeg())
    assert response.mask.width == 512


async def refused(client: SegmentationClient) -> grpc.StatusCode:
    with pytest.raises(SegmentationError) as caught:
        await client.segment(astronaut_jpeg(), timeout_s=10)
    return caught.value.code


def tls_config(pki: dict[str, object], **overrides: object) -> ServiceConfig:
    """A loopback server with the test CA's server certificate."""
    paths = pki["paths"]
    return loopback_config(
        models=("selfie-general",),
        tls_cert_file=str(paths["server_cert"]),
        tls_key_file=str(paths["server_key"]),
        **overrides,
    )


async def test_tls_serves_clients_that_trust_the_server_and_refuses_others(pki) -> None:
    async with running_server(tls_config(pki)) as service:
        target = f"localhost:{service.port}"
        async with SegmentationClient(target, root_certificates=pki["server_ca"]) as client:
            await segment_ok(client)
        async with SegmentationClient(target, root_certificates=pki["stranger_ca"]) as client:
            assert await refused(client) == grpc.StatusCode.UNAVAILABLE
        async with SegmentationClient(target) as plaintext:
            assert await refused(plaintext) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(pki) -> None:
    config = tls_config(pki, tls_client_ca_file=str(pki["paths"]["client_ca"]))
    async with running_server(config) as service:
        target = f"localhost:{service.port}"
        good, stranger = pki["client"], pki["stranger_client"]
        async with SegmentationClient(
            target,
            root_certificates=pki["server_ca"],
            client_certificate=good.certificate_pem,
            client_key=good.key_pem,
        ) as client:
            await segment_ok(client)
        async with SegmentationClient(target, root_certificates=pki["server_ca"]) as anonymous:
            assert await refused(anonymous) == grpc.StatusCode.UNAVAILABLE
        async with SegmentationClient(
            target,
            root_certificates=pki["server_ca"],
            client_certificate=stranger.certificate_pem,
            client_key=stranger.key_pem,
        ) as intruder:
            assert await refused(intruder) == grpc.StatusCode.UNAVAILABLE


def refused_stream(target: str, token: str | None) -> tuple[grpc.StatusCode, str]:
    """A stream opened with the synchronous API: grpcio's asyncio client may report a stream
    the server ended while it was still writing as INTERNAL "Internal error from Core"
    instead of the server's status (grpc/grpc issue 36066)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    requests = [
        pb.StreamSegmentRequest(config=pb.StreamConfig()),
        pb.StreamSegmentRequest(frame=pb.Frame(frame_id=0, jpeg=astronaut_jpeg())),
    ]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamSegment(iter(requests), metadata=metadata, timeout=10))
    return caught.value.code(), caught.value.details()


async def test_a_bearer_token_is_required_on_every_call_but_health_checks() -> None:
    config = loopback_config(models=("selfie-general",), auth_token=TOKEN)
    async with running_server(config) as service:
        async with SegmentationClient(service.target, token=TOKEN) as client:
            await segment_ok(client)
            assert [m.name for m in await client.list_models()] == ["selfie-general"]

            async def frames() -> AsyncIterator[FrameToSend]:
                yield FrameToSend(0, astronaut_jpeg())

            assert [r.frame_id async for r in client.stream(frames())] == [0]

        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
            async with SegmentationClient(service.target, token=token) as client:
                assert await refused(client) == grpc.StatusCode.UNAUTHENTICATED
            code, details = await asyncio.to_thread(refused_stream, service.target, token)
            assert code == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in details

        # Kubernetes' gRPC probe sends no metadata: health stays open.
        async with grpc.aio.insecure_channel(service.target) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_settings_must_come_together() -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        loopback_config(tls_cert_file="cert.pem")
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        loopback_config(tls_client_ca_file="ca.pem")


def test_the_log_says_when_the_server_runs_in_plaintext(caplog: pytest.LogCaptureFixture) -> None:
    from service.app import _log_transport

    with caplog.at_level("INFO"):
        _log_transport(loopback_config())
    assert "PLAINTEXT" in caplog.text and "no token required" in caplog.text
