"""`segmentation`: a video filter that sends each frame to the segmentation service and puts
out the frame with the person's mask as its alpha channel, the mask alone, or the frame
composited by the service over a blurred, coloured or pictured background.

Three threads, none of which waits on another's round trip:
- the streaming thread (`_chain`) JPEG-encodes each frame and hands it to the stream; it waits
  only while `max-in-flight` frames are unanswered;
- the stream's thread (`session.StreamSession`) talks gRPC and files each answer;
- the source pad's task (`_push_next`) takes frames and events out in arrival order, each frame
  once answered, and pushes them downstream with their timestamps, duration and flags.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from gi.repository import GObject, Gst, GstVideo  # noqa: E402

from segmentation.v1 import segmentation_pb2 as pb  # noqa: E402
from segmentation_client import FrameToSend, SegmentationError  # noqa: E402
from segmentation_gstreamer import modes  # noqa: E402
from segmentation_gstreamer.frames import (  # noqa: E402
    FrameCodec,
    Layout,
    fill_mask,
    fill_with_alpha,
)
from segmentation_gstreamer.in_flight import InFlight, PendingFrame  # noqa: E402
from segmentation_gstreamer.session import StreamSession, StreamSettings  # noqa: E402

Gst.init(None)  # a no-op under gst-launch or the plugin loader; applications may import first

DEFAULT_TARGET = "localhost:50051"
MASK_ENCODINGS = {"jpeg": pb.MASK_ENCODING_JPEG, "raw": pb.MASK_ENCODING_RAW_U8}
# How a refusal reaches the bus: the GStreamer error code, and the reason in words.
REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: (Gst.ResourceError.NOT_AUTHORIZED, "the token was refused"),
    grpc.StatusCode.NOT_FOUND: (Gst.ResourceError.NOT_FOUND, "the model is unknown"),
    grpc.StatusCode.UNAVAILABLE: (Gst.ResourceError.OPEN_READ_WRITE, "no replica answered"),
    grpc.StatusCode.INVALID_ARGUMENT: (Gst.ResourceError.SETTINGS, "the settings were refused"),
}
_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY
_RO = GObject.ParamFlags.READABLE


def _caps(formats: tuple[str, ...]) -> Gst.Caps:
    return Gst.Caps.from_string(
        f"video/x-raw,format={{{','.join(formats)}}},width=[1,2147483647],"
        "height=[1,2147483647],framerate=[0/1,2147483647/1]"
    )


SINK_CAPS = _caps(modes.INPUT_FORMATS)
SRC_CAPS = _caps(modes.OUTPUT_FORMATS)


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


class SegmentationFilter(Gst.Element):
    GST_PLUGIN_NAME = "segmentation"
    __gstmetadata__ = (
        "Person segmentation",
        "Filter/Effect/Video",
        "Removes, blurs or replaces the background behind people through the segmentation "
        "service: the mask as alpha (RGBA/BGRA/A420), the mask alone (GRAY8), or the frame "
        "composited by the service",
        "Segmentation service",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, SINK_CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, SRC_CAPS),
    )
    __gproperties__ = PROPERTIES

    def __init__(self) -> None:
        super().__init__()
        self._settings = {name: spec[-2] for name, spec in PROPERTIES.items()}
        self._codec = FrameCodec()
        self._in_flight = InFlight(1)
        self._session: StreamSession | None = None
        self._flow = Gst.FlowReturn.OK
        self._layouts: tuple[Layout, Layout] | None = None  # of the current caps: in, out
        self._frame_duration_ns = 0
        self._next_frame_id = 0
        self._last_mask: np.ndarray | None = None
        self._frames_dropped = 0
        self._latency_ns = 0  # what the latency query answers we add

        self.sinkpad = Gst.Pad.new_from_template(self.__gsttemplates__[0], "sink")
        self.sinkpad.set_chain_function_full(self._chain)
        self.sinkpad.set_event_function_full(self._sink_event)
        self.sinkpad.set_query_function_full(self._sink_query)
        self.add_pad(self.sinkpad)
        self.srcpad = Gst.Pad.new_from_template(self.__gsttemplates__[1], "src")
        self.srcpad.set_query_function_full(self._src_query)
        self.srcpad.set_activatemode_function_full(self._src_activate)
        self.add_pad(self.srcpad)

    # Properties

    def do_get_property(self, prop: GObject.ParamSpec) -> object:
        if prop.name == "frames-dropped":
            return self._frames_dropped
        if prop.name == "reconnects":
            return self._session.reconnects if self._session else 0
        return self._settings[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: object) -> None:
        choices = {"mode": modes.MODES, "mask-encoding": tuple(MASK_ENCODINGS)}.get(prop.name)
        if choices is not None and value not in choices:
            Gst.warning(f"{prop.name} must be one of {', '.join(choices)}; was {value!r}")
            return
        self._settings[prop.name] = value

    # States

    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.READY_TO_PAUSED:
            try:
                self._start()
            except OSError as error:  # a TLS or background file that cannot be read
                self._post_error(Gst.ResourceError.OPEN_READ, f"segmentation: {error}")
                return Gst.StateChangeReturn.FAILURE
        result = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self._stop()
        return result

    def _start(self) -> None:
        s = self._settings
        self._in_flight = InFlight(s["max-in-flight"])
        self._flow = Gst.FlowReturn.OK
        self._next_frame_id = 0
        self._last_mask = None
        self._frames_dropped = 0
        settings = StreamSettings(
            target=s["target"],
            stream_id=s["stream-id"] or self._default_stream_id(),
            model=s["model"],
            token=s["token"],
            root_certificates=_read(s["ca-file"]),
            client_certificate=_read(s["cert-file"]),
            client_key=_read(s["key-file"]),
            mask_encoding=MASK_ENCODINGS[s["mask-encoding"]],
            temporal_smoothing=s["smoothing"],
            edge_aware_upscale=s["edge-aware"],
            composite=self._composite(),
            answer_timeout_s=s["answer-timeout"],
            give_up_after_s=s["give-up-after"],
        )
        self._session = StreamSession(settings, self._in_flight.answer, self._on_stream_failure)
        self._session.start()

    def _stop(self) -> None:
        if self._session is not None:
            self._session.stop()

    def _default_stream_id(self) -> str:
        # Unique across hosts and processes: a stream id already open on a replica is taken
        # over, which would end another pipeline's stream of the same element name.
        names, element = [], self
        while element is not None:  # the element's name, then its bins' up to the pipeline
            names.append(element.get_name())
            element = element.get_parent()
        return "/".join([socket.gethostname(), str(os.getpid()), *reversed(names)])

    def _composite(self) -> pb.Composite | None:
        s = self._settings
        quality = s["jpeg-quality"]
        if s["mode"] == "blur":
            return pb.Composite(blur_radius=s["blur-radius"], jpeg_quality=quality)
        if s["mode"] == "color":
            return pb.Composite(color_rgb=s["color"], jpeg_quality=quality)
        if s["mode"] == "image":
            return pb.Composite(image_jpeg=_read(s["image"]) or b"", jpeg_quality=quality)
        return None

    # The streaming thread

    def _chain(self, pad: Gst.Pad, parent: Gst.Object, buffer: Gst.Buffer) -> Gst.FlowReturn:
        if self._flow != Gst.FlowReturn.OK:
            return self._flow
        if self._layouts is None:
            return Gst.FlowReturn.NOT_NEGOTIATED
        layout, out_layout = self._layouts
        layout = _with_video_meta(layout, buffer)
        ok, mapped = buffer.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.ERROR
        try:
            jpeg = self._codec.encode(layout, mapped.data, self._settings["jpeg-quality"])
        finally:
            buffer.unmap(mapped)
        frame = PendingFrame(self._next_frame_id, buffer, layout, out_layout)
        self._next_frame_id += 1
        if not self._in_flight.add_frame(frame):
            # The stream's failure is on the bus already, before the error this return causes.
            return (
                Gst.FlowReturn.FLUSHING if self._in_flight.failure is None else Gst.FlowReturn.ERROR
            )
        timestamp_us = buffer.pts // 1000 if buffer.pts != Gst.CLOCK_TIME_NONE else 0
        self._session.send(FrameToSend(frame.frame_id, jpeg, timestamp_us))
        return Gst.FlowReturn.OK

    def _sink_event(self, pad: Gst.Pad, parent: Gst.Object, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.FLUSH_START:
            self.srcpad.push_event(event)  # unblocks a push downstream first
            self._in_flight.set_flushing(True)
            self.srcpad.pause_task()
            return True
        if event.type == Gst.EventType.FLUSH_STOP:
            self._in_flight.set_flushing(False)
            self._flow = Gst.FlowReturn.OK
            result = self.srcpad.push_event(event)
            self.srcpad.start_task(self._push_next)
            return result
        if event.type == Gst.EventType.CAPS:
            event = self._set_caps(event.parse_caps())
        if Gst.EventType.get_flags(event.type) & Gst.EventTypeFlags.SERIALIZED:
            self._in_flight.add_event(event)  # leaves after the frames before it
            return True
        return self.srcpad.push_event(event)

    def _set_caps(self, caps: Gst.Caps) -> Gst.Event:
        structure = caps.get_structure(0)
        out = structure.copy()
        out.set_value("format", modes.output_format(self._mode(), structure.get_value("format")))
        if self._mode() == modes.MASK:
            _remove_colour_fields(out)
        out_caps = Gst.Caps.from_string(out.to_string())
        self._layouts = (_layout(caps), _layout(out_caps))
        info = GstVideo.VideoInfo.new_from_caps(caps)
        self._frame_duration_ns = (
            Gst.util_uint64_scale_int(Gst.SECOND, info.fps_d, info.fps_n) if info.fps_n else 0
        )
        if not self._latency_ns:
            self._latency_ns = self._frame_duration_ns or Gst.SECOND // 30
        return Gst.Event.new_caps(out_caps)

    def _mode(self) -> str:
        return self._settings["mode"]

    # Caps and latency

    def _sink_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            return self._answer_caps(query, self.srcpad, SINK_CAPS, forward=False)
        if query.type == Gst.QueryType.ALLOCATION:
            return False  # the output is a new buffer, of other caps: upstream allocates its own
        return pad.query_default(parent, query)

    def _src_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            return self._answer_caps(query, self.sinkpad, SRC_CAPS, forward=True)
        if query.type == Gst.QueryType.LATENCY:
            if not self.sinkpad.peer_query(query):
                return False
            live, min_ns, max_ns = query.parse_latency()
            held_ns = self._settings["max-in-flight"] * self._frame_duration_ns
            if max_ns != Gst.CLOCK_TIME_NONE:
                max_ns += max(self._latency_ns, held_ns)
            query.set_latency(live, min_ns + self._latency_ns, max_ns)
            return True
        return pad.query_default(parent, query)

    def _answer_caps(
        self, query: Gst.Query, other: Gst.Pad, template: Gst.Caps, forward: bool
    ) -> bool:
        """Caps on one side are the other side's peer caps with each format mapped through
        the mode: input to output (`forward`) or back."""
        peer = other.peer_query_caps(None)
        structures = []
        for input_format in modes.INPUT_FORMATS:
            output_format = modes.output_format(self._mode(), input_format)
            have, want = (input_format, output_format) if forward else (output_format, input_format)
            part = peer.intersect(Gst.Caps.from_string(f"video/x-raw,format={have}"))
            for index in range(part.get_size()):
                structure = part.get_structure(index).copy()
                structure.set_value("format", want)
                if have != want and self._mode() == modes.MASK:
                    _remove_colour_fields(structure)
                structures.append(structure.to_string().rstrip(";"))
        caps = Gst.Caps.from_string("; ".join(structures)) if structures else Gst.Caps.new_empty()
        caps = caps.intersect(template)
        wanted = query.parse_caps()
        if wanted is not None:
            caps = wanted.intersect_full(caps, Gst.CapsIntersectMode.FIRST)
        query.set_caps_result(caps)
        return True

    # The source pad's task

    def _src_activate(
        self, pad: Gst.Pad, parent: Gst.Object, mode: Gst.PadMode, active: bool
    ) -> bool:
        if active:
            self._in_flight.set_flushing(False)
            return pad.start_task(self._push_next)
        self._in_flight.set_flushing(True)
        return pad.stop_task()

    def _push_next(self, *_: object) -> None:
        item = self._in_flight.take()
        if item is None:  # flushing, or the stream failed
            self.srcpad.pause_task()
            return
        if isinstance(item, Gst.Event):
            self.srcpad.push_event(item)
            return
        result = self.srcpad.push(self._output(item))
        if result != Gst.FlowReturn.OK:
            self._flow = result
            if result in (Gst.FlowReturn.NOT_LINKED, Gst.FlowReturn.NOT_NEGOTIATED) or (
                result < Gst.FlowReturn.EOS
            ):
                self._post_error(
                    Gst.StreamError.FAILED, f"streaming stopped: {Gst.flow_get_name(result)}"
                )
            self.srcpad.pause_task()

    def _output(self, frame: PendingFrame) -> Gst.Buffer:
        answer = frame.answer
        segmented = answer.status == pb.StreamSegmentResponse.OK
        if not segmented:
            self._frames_dropped += 1
        self._track_latency(time.monotonic() - frame.sent_at)
        if self._mode() in modes.COMPOSITES and not segmented:
            return frame.buffer  # unprocessed: same format, same buffer
        out = Gst.Buffer.new_allocate(None, frame.out_layout.size, None)
        _, target = out.map(Gst.MapFlags.WRITE)
        try:
            pixels = np.ndarray(frame.out_layout.size, np.uint8, target.data)
            if self._mode() in modes.COMPOSITES:
                self._codec.fill_from_jpeg(answer.composited.jpeg, frame.out_layout, pixels)
            else:
                alpha = self._alpha(answer if segmented else None, frame.layout)
                if self._mode() == modes.MASK:
                    fill_mask(alpha, frame.out_layout, pixels)
                else:
                    _, source = frame.buffer.map(Gst.MapFlags.READ)
                    try:
                        fill_with_alpha(frame.layout, source.data, alpha, frame.out_layout, pixels)
                    finally:
                        frame.buffer.unmap(source)
        finally:
            out.unmap(target)
        out.pts, out.dts, out.duration = frame.buffer.pts, frame.buffer.dts, frame.buffer.duration
        out.offset, out.offset_end = frame.buffer.offset, frame.buffer.offset_end
        out.set_flags(frame.buffer.get_flags())
        return out

    def _alpha(self, answer: pb.StreamSegmentResponse | None, layout: Layout) -> np.ndarray:
        """The answer's mask; for a dropped frame the last good one, or none (all opaque)."""
        if answer is not None:
            self._last_mask = self._codec.decode_mask(answer.mask)
            return self._last_mask
        shape = (layout.height, layout.width)
        last = self._last_mask
        if last is None or last.shape != shape or self._settings["unmasked-when-dropped"]:
            return np.full(shape, 255, np.uint8)
        return last

    def _track_latency(self, seconds: float) -> None:
        """Raises what the latency query answers when frames take longer, and tells the
        pipeline, which queries again and delays its sinks by as much."""
        taken_ns = int(seconds * Gst.SECOND)
        if taken_ns > self._latency_ns * 1.25:
            self._latency_ns = int(taken_ns * 1.25)
            self.post_message(Gst.Message.new_latency(self))

    # Errors

    def _on_stream_failure(self, failure: Exception) -> None:
        """The stream cannot go on: the reason goes on the bus, then both threads stop."""
        code, reason = Gst.ResourceError.FAILED, "the stream failed"
        if isinstance(failure, SegmentationError):
            code, reason = REFUSALS.get(failure.code, (code, reason))
        self._post_error(code, f"segmentation service: {reason}: {failure}")
        self._flow = Gst.FlowReturn.ERROR
        self._in_flight.fail(failure)

    def _post_error(self, code: Gst.ResourceError | Gst.StreamError, text: str) -> None:
        domain = (
            Gst.resource_error_quark()
            if isinstance(code, Gst.ResourceError)
            else Gst.stream_error_quark()
        )
        self.message_full(
            Gst.MessageType.ERROR, domain, int(code), text, text, __file__, "segmentation", 0
        )


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _remove_colour_fields(structure: Gst.Structure) -> None:
    """A mask has no colours: the frame's colorimetry and chroma siting do not apply to it."""
    for name in ("colorimetry", "chroma-site"):
        structure.remove_field(name)


def _layout(caps: Gst.Caps) -> Layout:
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


def _with_video_meta(layout: Layout, buffer: Gst.Buffer) -> Layout:
    """A buffer's own strides and offsets (a camera's padded rows), when it carries them."""
    meta = GstVideo.buffer_get_video_meta(buffer)
    if meta is None:
        return layout
    planes = len(layout.strides)
    return Layout(
        layout.format, layout.width, layout.height, tuple(meta.stride[:planes]),
        tuple(meta.offset[:planes]), layout.size,
    )  # fmt: skip


GObject.type_register(SegmentationFilter)
