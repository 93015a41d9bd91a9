"""The element's caps: what each pad takes, the output caps of given input caps in a mode, the
answer to a caps query, and a frame's layout read off caps or a buffer's video meta."""

from __future__ import annotations

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402

from segmentation_gstreamer import modes  # noqa: E402
from segmentation_gstreamer.frames import Layout  # noqa: E402

Gst.init(None)  # caps are built at import; a no-op under gst-launch or the plugin loader


def _caps(formats: tuple[str, ...]) -> Gst.Caps:
    return Gst.Caps.from_string(
        f"video/x-raw,format={{{','.join(formats)}}},width=[1,2147483647],"
        "height=[1,2147483647],framerate=[0/1,2147483647/1]"
    )


SINK_CAPS = _caps(modes.INPUT_FORMATS)
SRC_CAPS = _caps(modes.OUTPUT_FORMATS)


def output_caps(caps: Gst.Caps, mode: str) -> Gst.Caps:
    """The caps the element puts out for input `caps` in `mode`."""
    structure = caps.get_structure(0)
    out = structure.copy()
    out.set_value("format", modes.output_format(mode, structure.get_value("format")))
    if mode == modes.MASK:
        remove_colour_fields(out)
    return Gst.Caps.from_string(out.to_string())


def frame_duration_ns(caps: Gst.Caps) -> int:
    """0 for a variable frame rate."""
    info = GstVideo.VideoInfo.new_from_caps(caps)
    return Gst.util_uint64_scale_int(Gst.SECOND, info.fps_d, info.fps_n) if info.fps_n else 0


def mapped_caps(peer: Gst.Caps, template: Gst.Caps, mode: str, forward: bool) -> Gst.Caps:
    """Caps on one side: the other side's peer caps with each format mapped through the mode,
    input to output (`forward`) or back."""
    structures = []
    for input_format in modes.INPUT_FORMATS:
        output_format = modes.output_format(mode, input_format)
        have, want = (input_format, output_format) if forward else (output_format, input_format)
        part = peer.intersect(Gst.Caps.from_string(f"video/x-raw,format={have}"))
        for index in range(part.get_size()):
            structure = part.get_structure(index).copy()
            structure.set_value("format", want)
            if have != want and mode == modes.MASK:
                remove_colour_fields(structure)
            structures.append(structure.to_string().rstrip(";"))
    caps = Gst.Caps.from_string("; ".join(structures)) if structures else Gst.Caps.new_empty()
    return caps.intersect(template)


def remove_colour_fields(structure: Gst.Structure) -> None:
    """A mask has no colours: the frame's colorimetry and chroma siting do not apply to it."""
    for name in ("colorimetry", "chroma-site"):
        structure.remove_field(name)


def layout(caps: Gst.Caps) -> Layout:
    info = GstVideo.VideoInfo.new_from_caps(caps)
    planes = info.finfo.n_planes
    return Layout(
        caps.get_structure(0).get_value("format"),
        info.width,
        info.height,
        tuple(info.stride[:planes]),
        tuple(info.offset[:planes]),
        info.size,
    )


def with_video_meta(layout: Layout, buffer: Gst.Buffer) -> Layout:
    """A buffer's own strides and offsets (a camera's padded rows), when it carries them."""
    meta = GstVideo.buffer_get_video_meta(buffer)
    if meta is None:
        return layout
    planes = len(layout.strides)
    return Layout(
        layout.format, layout.width, layout.height, tuple(meta.stride[:planes]),
        tuple(meta.offset[:planes]), layout.size,
    )  # fmt: skip
