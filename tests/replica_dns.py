"""A DNS server on loopback that answers the service's name with several replicas' addresses,
as a Kubernetes headless Service does: for the client's balancing, failover and scale-out tests.

A headless Service lists a pod only once it is ready: `ReplicasResolver.addresses` may change
while it serves, so that a scale-out test adds a replica's address once it is SERVING.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from loadtest.local_server import free_port

NAME = "segmentation.test."
REPLICAS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


class ReplicasResolver(BaseResolver):
    """Answers the service's name with every address in `addresses`, as a headless Service
    does with its ready pods."""

    def __init__(self, addresses: Sequence[str] = REPLICAS) -> None:
        self.addresses = list(addresses)
        self.queries = 0  # lookups of the service's name answered so far

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        if str(request.q.qname) == NAME and request.q.qtype == QTYPE.A:
            self.queries += 1
            for address in list(self.addresses):
                reply.add_answer(RR(NAME, QTYPE.A, rdata=A(address), ttl=5))
        return reply


@contextmanager
def dns_server(resolver: ReplicasResolver) -> Iterator[int]:
    """Serves `resolver` on a free loopback port; yields the port."""
    port = free_port()
    server = DNSServer(resolver, port=port, address="127.0.0.1")
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.server.shutdown()


def dns_target(dns_port: int, port: int) -> str:
    """The client's target for the service's name, resolved by the DNS server on `dns_port`."""
    return f"dns://127.0.0.1:{dns_port}/{NAME.rstrip('.')}:{port}"
