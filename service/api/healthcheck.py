"""`segmentation-healthcheck`: exit 0 when the server's gRPC health check says SERVING.

For container HEALTHCHECKs and anything else that probes without Kubernetes' native gRPC probe.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segmentation-healthcheck", description=__doc__)
    parser.add_argument("--target", default="localhost:50051", help="server HOST:PORT")
    parser.add_argument("--service", default="", help="service name; empty: the whole server")
    parser.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
        except grpc.RpcError as error:
            print(f"{args.target}: {error.code().name} {error.details()}", file=sys.stderr)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target}: {status}")
    sys.exit(0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1)


if __name__ == "__main__":
    main()
