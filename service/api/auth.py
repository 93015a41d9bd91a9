"""Bearer-token check for every call but health checks (which orchestrators make bare)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

_UNCHECKED_PREFIXES = ("/grpc.health.v1.Health/",)
_REFUSAL = "missing or wrong bearer token: send metadata `authorization: Bearer <token>`"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _authorised(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> bool:
        offered = b""
        for key, value in metadata or ():
            if key == "authorization":
                offered = value.encode() if isinstance(value, str) else value
        # Constant time: the time taken says nothing about how much of the token matched.
        return hmac.compare_digest(offered, self._expected)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_UNCHECKED_PREFIXES):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler
        return _refusing_handler_like(handler)


def _refusing_handler_like(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    async def refuse_streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        # Streaming responses come from an async generator, even one that never yields.
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        yield

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_streaming, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_streaming, **serializers)
    return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
