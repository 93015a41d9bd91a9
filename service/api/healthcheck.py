"""`segmentation-healthcheck`: exit 0 when the server's gRPC health check says SERVING.

For container HEALTHCHECKs and exec probes: run with no argument beside the server, with the
server's own settings (the same SEGMENTATION_* variables), it checks that server the way it
listens. With the plaintext health-only port on (`--health-port`) it asks there, unless
`--target` names another server; with TLS on,
it speaks TLS and trusts the server's own certificate; under mutual TLS, whose settings hold
no client key, only the health-only port can work, and it says so. `--service liveness` asks
for liveness instead of readiness.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.transport import HEALTH_HOST, local_target
from service.config import ServiceConfig
from service.settings_parsing import SettingError


class HealthcheckError(Exception):
    """The settings give the healthcheck no way to reach the server."""


def _server_name(certificate_file: str) -> str:
    """A name the server's certificate holds: its first DNS name, else its common name. The
    healthcheck trusts exactly that certificate, so checking one of its own names is enough."""
    # The standard library reads a certificate file only through this helper (it has no
    # public parser, and the server needs no X.509 package for anything else).
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        raise HealthcheckError(
            f"this Python cannot read {certificate_file} to find the server's name: "
            "give the name with --server-name"
        )
    decoded = decode(certificate_file)
    for kind, value in decoded.get("subjectAltName", ()):
        if kind == "DNS":
            return value
    for part in decoded.get("subject", ()):
        for key, value in part:
            if key == "commonName":
                return value
    raise HealthcheckError(f"{certificate_file} names no host (no DNS name, no common name)")


def channel_for(
    config: ServiceConfig, target: str | None, server_name: str | None = None
) -> tuple[grpc.Channel, str]:
    """A channel to the server that `config` describes (or to `target`, dialled as that server
    listens), and the target it dials."""
    if config.health_port > 0 and target is None:
        target = f"{HEALTH_HOST}:{config.health_port}"
        return grpc.insecure_channel(target), target
    target = target or local_target(config.address)
    if config.tls_client_ca_file:
        raise HealthcheckError(
            "mutual TLS is on (SEGMENTATION_TLS_CLIENT_CA_FILE) and the server's settings hold "
            "no client key: turn the plaintext health-only port on (SEGMENTATION_HEALTH_PORT, "
            "bound to 127.0.0.1) and the healthcheck asks there"
        )
    if not config.tls:
        return grpc.insecure_channel(target), target
    certificate = Path(config.tls_cert_file).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate)
    name = server_name or _server_name(config.tls_cert_file)
    options = [("grpc.ssl_target_name_override", name)]
    return grpc.secure_channel(target, credentials, options=options), target


def check(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[bool, str]:
    """Whether the server is SERVING, and the line that says so."""
    parser = argparse.ArgumentParser(prog="segmentation-healthcheck", description=__doc__)
    parser.add_argument(
        "--target",
        default=None,
        help="server HOST:PORT, dialled as the server's settings say it listens (TLS or not); "
        "default: the health-only port when it is on, else the server's own address",
    )
    parser.add_argument(
        "--server-name",
        default=None,
        help="with TLS: the name to check in the server's certificate; default: its first DNS "
        "name, else its common name",
    )
    parser.add_argument(
        "--service", default="", help="service name; empty: readiness; liveness: liveness"
    )
    parser.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        config = ServiceConfig.from_environment(os.environ if environ is None else environ)
        channel, target = channel_for(config, args.target, args.server_name)
    except SettingError as error:
        variable = ServiceConfig.parser().env_name(error.name)
        return False, f"segmentation-healthcheck: the server's setting {variable}: {error}"
    except (HealthcheckError, OSError, ssl.SSLError) as error:
        return False, f"segmentation-healthcheck: {error}"
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
        except grpc.RpcError as error:
            return False, f"{target}: {error.code().name} {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: Sequence[str] | None = None) -> None:
    serving, line = check(argv)
    print(line, file=sys.stdout if serving else sys.stderr)
    sys.exit(0 if serving else 1)


if __name__ == "__main__":
    main()
