"""A DNS server on loopback that answers the service's name with several replicas' addresses,
as a Kubernetes headless Service does: for the client's balancing and failover tests."""

from __future__ import annotations

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver

NAME = "segmentation.test."
REPLICAS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


class ReplicasResolver(BaseResolver):
    """Answers the service's name with every replica's address, as a headless Service does."""

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        if str(request.q.qname) == NAME and request.q.qtype == QTYPE.A:
            for address in REPLICAS:
                reply.add_answer(RR(NAME, QTYPE.A, rdata=A(address), ttl=5))
        return reply
