"""Runs one pipeline through the `segmentation` element, in a process of its own as an
application would: `appsrc` of raw frames ! videoconvert ! [input caps] ! segmentation !
[output caps] ! appsink. Prints what came out as JSON and saves the frames' bytes.

`python -m tests.gst_pipeline SPEC.json`; the spec names the frames (an .npy of RGB frames),
the formats, the element's properties and where to save. Run it through `run_pipeline()`.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import gi
import numpy as np

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from segmentation_gstreamer.element import SegmentationFilter  # noqa: E402


def main(spec: dict) -> dict:
    Gst.init(None)
    Gst.Element.register(None, "segmentation", Gst.Rank.NONE, SegmentationFilter)
    frames = np.load(spec["frames"])
    count, height, width, _ = frames.shape
    fps = spec.get("fps", 30)
    duration = Gst.SECOND // fps
    properties = " ".join(f"{key}={value}" for key, value in spec["properties"].items())
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time is-live={str(spec.get('live', False)).lower()} "
        f"caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! video/x-raw,format={spec['input_format']} "
        f"! segmentation name=segmentation {properties} "
        f"! {spec.get('output_caps', 'video/x-raw')} ! appsink name=sink sync=false"
    )
    source, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    element = pipeline.get_by_name("segmentation")
    samples: list[Gst.Sample] = []
    sink.set_property("emit-signals", True)
    sink.connect("new-sample", lambda s: samples.append(s.emit("pull-sample")) or 0)
    pipeline.set_state(Gst.State.PLAYING)

    def push() -> None:
        started = time.monotonic()
        for index in range(count):
            if spec.get("live"):  # a camera: one frame per interval, answered or not
                time.sleep(max(0.0, started + index / fps - time.monotonic()))
            buffer = Gst.Buffer.new_wrapped(frames[index].tobytes())
            buffer.pts, buffer.duration = index * duration, duration
            buffer.offset = index
            # Flags that must come out untouched: a discontinuity first, then key frames.
            flags = Gst.BufferFlags.DISCONT if index == 0 else Gst.BufferFlags(0)
            if index % 3:
                flags |= Gst.BufferFlags.DELTA_UNIT
            buffer.set_flags(flags)
            if source.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
                return
        source.emit("end-of-stream")

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    message = pipeline.get_bus().timed_pop_filtered(
        spec.get("timeout_s", 60) * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    latency = Gst.Query.new_latency()
    element.get_static_pad("src").query(latency)
    result = {
        "ended": None if message is None else Gst.MessageType.get_name(message.type),
        "error": None,
        "caps": samples[0].get_caps().to_string() if samples else None,
        "pts": [s.get_buffer().pts for s in samples],
        "durations": [s.get_buffer().duration for s in samples],
        "offsets": [s.get_buffer().offset for s in samples],
        "flags": [int(s.get_buffer().get_flags()) for s in samples],
        "expected_flags": [
            int(Gst.BufferFlags.DISCONT if i == 0 else 0)
            | int(Gst.BufferFlags.DELTA_UNIT if i % 3 else 0)
            for i in range(count)
        ],
        "frames_dropped": element.get_property("frames-dropped"),
        "reconnects": element.get_property("reconnects"),
        "latency_ns": list(latency.parse_latency()),
    }
    if message is not None and message.type == Gst.MessageType.ERROR:
        error, _ = message.parse_error()
        result["error"] = {"domain": error.domain, "code": error.code, "message": error.message}
    pipeline.set_state(Gst.State.NULL)
    pusher.join(timeout=5)
    if samples and spec.get("save"):
        np.save(spec["save"], np.stack([_bytes(s) for s in samples]))
    return result


def _bytes(sample: Gst.Sample) -> np.ndarray:
    buffer = sample.get_buffer()
    return np.frombuffer(buffer.extract_dup(0, buffer.get_size()), np.uint8)


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        print(json.dumps(main(json.load(file))))
