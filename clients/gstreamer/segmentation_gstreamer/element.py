"""`segmentation`: a video filter that sends each frame to the segmentation service and puts
out the frame with the person's mask as its alpha channel, the mask alone, or the frame
composited by the service over a blurred, coloured or pictured background.

Three threads, none of which waits on another's round trip:
- the streaming thread (`_chain`) JPEG-encodes each frame and hands it to the stream; it waits
  only while `max-in-flight` frames are unanswered;
- the stream's thread (`session.StreamSession`, over the client library) files each answer;
- the source pad's task (`_push_next`) takes frames and events out in arrival order, each frame
  once answered, and pushes them downstream with their timestamps, duration and flags.

The parts with a job of their own: `properties` (what GObject declares), `settings` (property
values to the stream's settings), `caps`, `output` (an answer plus the last mask to the output
frame), and `bus` (a failure as an error message on the bus).
"""

from __future__ import annotations

import time

import gi

gi.require_version("Gst", "1.0")
import numpy as np  # noqa: E402
from gi.repository import GObject, Gst  # noqa: E402

from segmentation_client import FrameToSend  # noqa: E402
from segmentation_gstreamer import bus  # noqa: E402
from segmentation_gstreamer import caps as element_caps  # noqa: E402
from segmentation_gstreamer.frames import FrameCodec, Layout  # noqa: E402
from segmentation_gstreamer.in_flight import InFlight, PendingFrame  # noqa: E402
from segmentation_gstreamer.output import OutputPolicy  # noqa: E402
from segmentation_gstreamer.properties import PROPERTIES  # noqa: E402
from segmentation_gstreamer.session import StreamSession  # noqa: E402
from segmentation_gstreamer.settings import (  # noqa: E402
    choice_error,
    default_stream_id,
    stream_settings,
)


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
        Gst.PadTemplate.new(
            "sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, element_caps.SINK_CAPS
        ),
        Gst.PadTemplate.new(
            "src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, element_caps.SRC_CAPS
        ),
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
        self._output_policy = OutputPolicy(self._settings["mode"], self._codec, False)
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
            return self._output_policy.frames_dropped
        if prop.name == "reconnects":
            return self._session.reconnects if self._session else 0
        return self._settings[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: object) -> None:
        error = choice_error(prop.name, value)
        if error is not None:
            Gst.warning(error)
            return
        self._settings[prop.name] = value

    # States

    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.READY_TO_PAUSED:
            try:
                self._start()
            except OSError as error:  # a TLS or background file that cannot be read
                bus.post_error(self, Gst.ResourceError.OPEN_READ, f"segmentation: {error}")
                return Gst.StateChangeReturn.FAILURE
        result = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            self._stop()
        return result

    def _start(self) -> None:
        s = self._settings
        settings = stream_settings(s, s["stream-id"] or default_stream_id(self))
        self._in_flight = InFlight(s["max-in-flight"])
        self._flow = Gst.FlowReturn.OK
        self._next_frame_id = 0
        self._output_policy = OutputPolicy(s["mode"], self._codec, s["unmasked-when-dropped"])
        self._session = StreamSession(settings, self._in_flight.answer, self._on_stream_failure)
        self._session.start()

    def _stop(self) -> None:
        if self._session is not None:
            self._session.stop()

    # The streaming thread

    def _chain(self, pad: Gst.Pad, parent: Gst.Object, buffer: Gst.Buffer) -> Gst.FlowReturn:
        if self._flow != Gst.FlowReturn.OK:
            return self._flow
        if self._layouts is None:
            return Gst.FlowReturn.NOT_NEGOTIATED
        layout, out_layout = self._layouts
        layout = element_caps.with_video_meta(layout, buffer)
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
        self._session.send(FrameToSend(frame.frame_id, jpeg, timestamp_us, context=frame))
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
        out_caps = element_caps.output_caps(caps, self._mode())
        self._layouts = (element_caps.layout(caps), element_caps.layout(out_caps))
        self._frame_duration_ns = element_caps.frame_duration_ns(caps)
        if not self._latency_ns:
            self._latency_ns = self._frame_duration_ns or Gst.SECOND // 30
        return Gst.Event.new_caps(out_caps)

    def _mode(self) -> str:
        return self._settings["mode"]

    # Caps and latency

    def _sink_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            return self._answer_caps(query, self.srcpad, element_caps.SINK_CAPS, forward=False)
        if query.type == Gst.QueryType.ALLOCATION:
            return False  # the output is a new buffer, of other caps: upstream allocates its own
        return pad.query_default(parent, query)

    def _src_query(self, pad: Gst.Pad, parent: Gst.Object, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            return self._answer_caps(query, self.sinkpad, element_caps.SRC_CAPS, forward=True)
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
        peer = other.peer_query_caps(None)
        caps = element_caps.mapped_caps(peer, template, self._mode(), forward)
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
                bus.post_error(
                    self, Gst.StreamError.FAILED, f"streaming stopped: {Gst.flow_get_name(result)}"
                )
            self.srcpad.pause_task()

    def _output(self, frame: PendingFrame) -> Gst.Buffer:
        self._track_latency(time.monotonic() - frame.sent_at)
        if self._output_policy.passes_through(frame.answer):
            return frame.buffer  # unprocessed: same format, same buffer
        out = Gst.Buffer.new_allocate(None, frame.out_layout.size, None)
        _, target = out.map(Gst.MapFlags.WRITE)
        _, source = frame.buffer.map(Gst.MapFlags.READ)
        try:
            pixels = np.ndarray(frame.out_layout.size, np.uint8, target.data)
            self._output_policy.fill(
                frame.answer, frame.layout, frame.out_layout, source.data, pixels
            )
        finally:
            frame.buffer.unmap(source)
            out.unmap(target)
        out.pts, out.dts, out.duration = frame.buffer.pts, frame.buffer.dts, frame.buffer.duration
        out.offset, out.offset_end = frame.buffer.offset, frame.buffer.offset_end
        out.set_flags(frame.buffer.get_flags())
        return out

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
        bus.post_error(self, *bus.stream_failure(failure))
        self._flow = Gst.FlowReturn.ERROR
        self._in_flight.fail(failure)


GObject.type_register(SegmentationFilter)
