"""The element's properties, as GObject declares them: type, nick, blurb, range, default."""

from __future__ import annotations

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GObject, Gst  # noqa: E402

from segmentation_gstreamer import modes  # noqa: E402

DEFAULT_TARGET = "localhost:50051"
_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY
_RO = GObject.ParamFlags.READABLE


# Every property, as GObject declares it: (type, nick, blurb, [min, max,] default, flags).
PROPERTIES: dict[str, tuple] = {
    "target": (
        str,
        "target",
        "gRPC target of the service: HOST:PORT, or "
        "dns:///NAME:PORT to spread streams over its replicas",
        DEFAULT_TARGET,
        _RW,
    ),
    "model": (str, "model", "model name; empty: the service's default", "", _RW),
    "stream-id": (
        str,
        "stream id",
        "id of this element's stream; empty: host, process and the element's path in the pipeline",
        "",
        _RW,
    ),
    "mode": (
        str,
        "mode",
        "alpha (the mask as alpha: RGBA, BGRA or A420), mask (GRAY8), "
        "or a composite by the service: blur, color, image",
        modes.ALPHA,
        _RW,
    ),
    "blur-radius": (
        float,
        "blur radius",
        "mode=blur: Gaussian blur of the background, in pixels",
        0.5,
        100.0,
        15.0,
        _RW,
    ),
    "color": (
        GObject.TYPE_UINT,
        "color",
        "mode=color: the background, 0xRRGGBB",
        0,
        0xFFFFFF,
        0x00B140,
        _RW,
    ),
    "image": (str, "image", "mode=image: a JPEG file, stretched behind each frame", "", _RW),
    "token": (str, "token", "bearer token the service requires", "", _RW),
    "ca-file": (str, "CA file", "PEM CA of the service; turns TLS on", "", _RW),
    "cert-file": (str, "certificate file", "PEM client certificate (mutual TLS)", "", _RW),
    "key-file": (str, "key file", "PEM client key (mutual TLS)", "", _RW),
    "smoothing": (
        float,
        "temporal smoothing",
        "0: off; in (0, 1]: how much of the last mask an uncertain pixel keeps, against flicker",
        0.0,
        1.0,
        0.0,
        _RW,
    ),
    "edge-aware": (
        bool,
        "edge-aware upscaling",
        "upscale the mask guided by the frame, so that its edges follow the image's",
        False,
        _RW,
    ),
    "mask-encoding": (str, "mask encoding", "masks over the wire: jpeg or raw", "jpeg", _RW),
    "jpeg-quality": (
        int,
        "JPEG quality",
        "of the frames sent (and of composites)",
        1,
        100,
        85,
        _RW,
    ),
    "max-in-flight": (
        int,
        "frames in flight",
        "frames sent and not yet out at most; the streaming thread waits beyond it (3: what "
        "a stream may have at the service by default, 2 in its pipeline and 1 waiting; more "
        "are dropped there)",
        1,
        64,
        3,
        _RW,
    ),
    "unmasked-when-dropped": (
        bool,
        "unmasked when dropped",
        "a frame the service dropped goes out unmasked instead of with the last good mask",
        False,
        _RW,
    ),
    "answer-timeout": (
        float,
        "answer timeout",
        "seconds without an answer before the stream moves to another replica",
        0.1,
        60.0,
        2.0,
        _RW,
    ),
    "give-up-after": (
        float,
        "give up after",
        "seconds without any replica before the element fails",
        0.1,
        3600.0,
        15.0,
        _RW,
    ),
    "frames-dropped": (
        GObject.TYPE_UINT64,
        "frames dropped",
        "frames the service did not segment (dropped, or lost to a replica's drain)",
        0,
        GObject.G_MAXUINT64,
        0,
        _RO,
    ),
    "reconnects": (
        GObject.TYPE_UINT64,
        "reconnects",
        "times the stream moved to another replica",
        0,
        GObject.G_MAXUINT64,
        0,
        _RO,
    ),
}
