"""The gRPC transport of the service: its server options, its port (plaintext, TLS or mutual
TLS), and the plaintext health-only port on 127.0.0.1 for the healthcheck under mutual TLS."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from service.config import ServiceConfig

# Room for the protobuf framing around the largest frame, so that a frame just over
# max_frame_bytes gets its own specific ERROR instead of a transport error.
_MESSAGE_OVERHEAD_BYTES = 64 << 10
# gRPC's own "no limit" for a duration: a connection past its age keeps its open streams
# until they end, however long (a call lasts hours).
_UNBOUNDED_MS = 2**31 - 1
HEALTH_HOST = "127.0.0.1"


def local_target(address: str, port: int | None = None) -> str:
    """Where a client on this machine reaches a server listening on `address` (HOST:PORT; on
    `port` instead when given: the port it bound)."""
    host, _colon, address_port = address.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{address_port if port is None else port}"


def server_options(config: ServiceConfig) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", config.max_frame_bytes + _MESSAGE_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", -1),
        # Find dead peers of long-lived streams, and let clients ping as the client library does.
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(config.min_client_ping_interval_s * 1000),
        ),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if config.max_connection_age_s:
        # A channel re-resolves its name only when a connection closes (grpc/grpc#12295): an
        # age makes every client see the replicas that joined since, and the unbounded grace
        # keeps each open stream where it is. gRPC adds +-10% jitter to the age itself.
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", _UNBOUNDED_MS),
        ]
    return options


def add_port(server: grpc.aio.Server, config: ServiceConfig) -> int:
    if not config.tls:
        return server.add_insecure_port(config.address)
    client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(Path(config.tls_key_file).read_bytes(), Path(config.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(config.address, credentials)


async def start_health_server(
    health_servicer: health.aio.HealthServicer, port: int
) -> tuple[grpc.aio.Server, int]:
    """A server with gRPC health alone, plaintext on 127.0.0.1 only: what runs in the pod (an
    exec probe, the image's HEALTHCHECK) reaches it without a client certificate, and nothing
    outside the pod does. It shares the main port's statuses."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{HEALTH_HOST}:{port}")
    await server.start()
    return server, bound
