"""The element's property values as the settings of its stream (no GStreamer here)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_gstreamer import modes
from segmentation_gstreamer.session import StreamSettings

MASK_ENCODINGS = {"jpeg": pb.MASK_ENCODING_JPEG, "raw": pb.MASK_ENCODING_RAW_U8}
# The properties that take one of a few words, and those words.
CHOICES = {"mode": modes.MODES, "mask-encoding": tuple(MASK_ENCODINGS)}


def choice_error(name: str, value: object) -> str | None:
    """Why `value` cannot be property `name`; None when it can."""
    choices = CHOICES.get(name)
    if choices is not None and value not in choices:
        return f"{name} must be one of {', '.join(choices)}; was {value!r}"
    return None


def stream_settings(values: Mapping[str, Any], stream_id: str) -> StreamSettings:
    """The stream the properties ask for; reads the TLS and background files (OSError when one
    cannot be read)."""
    return StreamSettings(
        target=values["target"],
        stream_id=stream_id,
        model=values["model"],
        token=values["token"],
        root_certificates=read_file(values["ca-file"]),
        client_certificate=read_file(values["cert-file"]),
        client_key=read_file(values["key-file"]),
        mask_encoding=MASK_ENCODINGS[values["mask-encoding"]],
        temporal_smoothing=values["smoothing"],
        edge_aware_upscale=values["edge-aware"],
        composite=composite(values),
        answer_timeout_s=values["answer-timeout"],
        give_up_after_s=values["give-up-after"],
    )


def composite(values: Mapping[str, Any]) -> pb.Composite | None:
    """What the service composites for the composite modes; None for alpha and mask."""
    quality = values["jpeg-quality"]
    match values["mode"]:
        case "blur":
            return pb.Composite(blur_radius=values["blur-radius"], jpeg_quality=quality)
        case "color":
            return pb.Composite(color_rgb=values["color"], jpeg_quality=quality)
        case "image":
            image = read_file(values["image"]) or b""
            return pb.Composite(image_jpeg=image, jpeg_quality=quality)
    return None


def read_file(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def default_stream_id(element: Any) -> str:
    """The stream id of an element that sets none: the host, the process, and the element's
    name with its bins' up to the pipeline. Unique across hosts and processes, since a stream id
    already open on a replica is taken over, which would end another pipeline's stream of the
    same element name."""
    names = []
    while element is not None:
        names.append(element.get_name())
        element = element.get_parent()
    return "/".join([socket.gethostname(), str(os.getpid()), *reversed(names)])
