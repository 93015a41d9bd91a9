"""`segmentation-webrtc-gateway`: serves the demo page, answers its WebRTC offer, and sends the
camera track back with the background replaced by the segmentation service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from importlib import resources

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from segmentation_client import SegmentationClient
from segmentation_webrtc.effects import EFFECTS, composite_for
from segmentation_webrtc.tracks import SegmentationSession, SegmentedTrack, latency_sender

log = logging.getLogger(__name__)
STATIC = resources.files("segmentation_webrtc") / "static"


def _loopback_candidates_only(sdp: str) -> str:
    """Keeps only 127.0.0.1 ICE candidates (for tests: no packet to any other address)."""
    return "\r\n".join(
        line
        for line in sdp.split("\r\n")
        if not line.startswith("a=candidate:") or " 127.0.0.1 " in line
    )


def _use_loopback_for_ice() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Gateway:
    def __init__(self, target: str, loopback_only: bool = False) -> None:
        self.client = SegmentationClient(target)
        self.loopback_only = loopback_only
        self.connections: set[RTCPeerConnection] = set()
        self.sessions: set[SegmentationSession] = set()
        if loopback_only:
            _use_loopback_for_ice()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/client.js", self.script)
        app.router.add_post("/offer", self.offer)
        app.on_shutdown.append(self.close)
        return app

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(
            text=(STATIC / "client.js").read_text(), content_type="application/javascript"
        )

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        effect = body.get("effect", "blur")
        if effect not in EFFECTS:
            raise web.HTTPBadRequest(text=f"unknown effect {effect!r}; choose one of {EFFECTS}")
        sdp = body["sdp"]
        if self.loopback_only:
            sdp = _loopback_candidates_only(sdp)
        connection = RTCPeerConnection()
        self.connections.add(connection)
        channel_holder: dict = {}
        session = SegmentationSession(
            self.client, composite_for(effect), stream_id=f"webrtc-{uuid.uuid4().hex[:8]}"
        )
        session.on_latency = latency_sender(channel_holder)
        self.sessions.add(session)

        @connection.on("datachannel")
        def on_datachannel(channel) -> None:  # type: ignore[no-untyped-def]
            channel_holder["channel"] = channel

        @connection.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            if track.kind == "video":
                session.start()
                connection.addTrack(SegmentedTrack(track, session))

        @connection.on("connectionstatechange")
        async def on_state() -> None:
            if connection.connectionState in ("failed", "closed"):
                await self._forget(connection, session)

        await connection.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=body["type"]))
        answer = await connection.createAnswer()
        await connection.setLocalDescription(answer)
        return web.json_response(
            {"sdp": connection.localDescription.sdp, "type": connection.localDescription.type}
        )

    async def _forget(self, connection: RTCPeerConnection, session: SegmentationSession) -> None:
        self.connections.discard(connection)
        self.sessions.discard(session)
        await session.stop()
        await connection.close()

    async def close(self, app: web.Application | None = None) -> None:
        for connection in list(self.connections):
            await connection.close()
        for session in list(self.sessions):
            await session.stop()
        await self.client.close()


async def _serve(host: str, port: int, target: str, loopback_only: bool) -> None:
    gateway = Gateway(target, loopback_only)
    runner = web.AppRunner(gateway.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"open http://{host}:{port}/ (segmentation service at {target})", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segmentation-webrtc-gateway", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT of the page")
    parser.add_argument("--target", default="localhost:50051", help="the segmentation service")
    parser.add_argument(
        "--loopback-only", action="store_true", help="ICE on 127.0.0.1 only (tests)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    host, port = args.listen.rsplit(":", 1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, int(port), args.target, args.loopback_only))


if __name__ == "__main__":
    main()
