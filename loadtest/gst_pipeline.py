"""Runs raw frames through the `segmentation` element in a process of its own, as an
application would, and prints what came out as JSON: for the element's tests and its benchmark.

Each of `streams` branches is `appsrc` of the frames ! videoconvert ! [input format] !
segmentation ! [output caps] ! appsink; without `element` the branch has no segmentation, to
measure what the rest of the pipeline costs. `python -m loadtest.gst_pipeline SPEC.json`, where
the spec holds: frames (an .npy of RGB frames), input_format, properties, and optionally
output_caps, live (push at the frame rate, as a camera does), pause ({"after": frames,
"seconds": s}: a live source that stops for a while), fps, count (frames to push, cycling
through the file's; all of them by default), streams, element, seek
({"after": frames out, "to_frame": n}: a flushing seek), save (an .npy of the first branch's
output bytes), timeout_s.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

import gi
import numpy as np

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from loadtest.gst_process import expected_flags  # noqa: E402
from loadtest.process_cpu import thread_ticks  # noqa: E402
from segmentation_gstreamer.element import SegmentationFilter  # noqa: E402


class Branch:
    """One appsrc's frames through the element into an appsink."""

    def __init__(self, pipeline: Gst.Pipeline, n: int, frames: np.ndarray, spec: dict) -> None:
        self.frames = frames
        self.count = spec.get("count", len(frames))
        self.spec = spec
        self.source = pipeline.get_by_name(f"src{n}")
        self.element = pipeline.get_by_name(f"segmentation{n}")
        self.samples: list[Gst.Sample] = []  # kept only when saved
        self.out: list[tuple[int, int, int, int]] = []  # pts, duration, offset, flags
        self._next_index = 0
        self._index_changed = threading.Condition()
        self._seeking = False  # no frame goes in between a seek's start and its end
        self._seek_index = 0
        self.stopped = False
        sink = pipeline.get_by_name(f"sink{n}")
        sink.set_property("emit-signals", True)
        sink.connect("new-sample", self._on_sample, n == 0 and bool(spec.get("save")))
        self.source.connect("seek-data", self._on_seek)
        self.pusher = threading.Thread(target=self._push, daemon=True)

    def _on_sample(self, sink: Gst.Element, keep: bool) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        buffer = sample.get_buffer()
        self.out.append((buffer.pts, buffer.duration, buffer.offset, int(buffer.get_flags())))
        if keep:
            self.samples.append(sample)
        return Gst.FlowReturn.OK

    def _on_seek(self, source: Gst.Element, position_ns: int) -> bool:
        # Called on the seeking thread while appsrc still flushes: what is pushed now is
        # refused, so the pusher waits for `resume` instead of taking this position at once.
        self._seek_index = position_ns // (Gst.SECOND // self.spec.get("fps", 30))
        return True

    def hold(self) -> None:
        """Before a flushing seek: no frame goes in until `resume`; a push under way ends
        first, so that the seek flushes it."""
        with self._index_changed:
            self._seeking = True

    def resume(self) -> None:
        """After the seek returned, its flush done: push on from the position appsrc asked."""
        with self._index_changed:
            self._seeking, self._next_index = False, self._seek_index
            self._index_changed.notify()

    def stop(self) -> None:
        with self._index_changed:
            self.stopped = True
            self._index_changed.notify()

    def _push(self) -> None:
        fps = self.spec.get("fps", 30)
        duration = Gst.SECOND // fps
        started = time.monotonic()
        while True:
            with self._index_changed:
                self._index_changed.wait_for(lambda: self.stopped or not self._seeking)
                index = self._next_index
            if self.stopped:
                return
            if self.spec.get("live") and index < self.count:  # a camera: one frame per interval
                pause = self.spec.get("pause", {"after": self.count, "seconds": 0})
                due = started + index / fps + (pause["seconds"] if index >= pause["after"] else 0)
                time.sleep(max(0.0, due - time.monotonic()))
            # The push holds the lock, so a seek's `hold` waits for it and the flush drops it.
            with self._index_changed:
                if self.stopped:
                    return
                if self._seeking or self._next_index != index:
                    continue  # a seek came while this frame waited
                self._next_index += 1
                if index >= self.count:
                    # A seek flushes what appsrc holds, its end-of-stream too: push on from there.
                    self.source.emit("end-of-stream")
                    self._index_changed.wait_for(
                        lambda: self.stopped or self._next_index < self.count
                    )
                    continue
                buffer = Gst.Buffer.new_wrapped(self.frames[index % len(self.frames)].tobytes())
                buffer.pts, buffer.duration, buffer.offset = index * duration, duration, index
                buffer.set_flags(Gst.BufferFlags(expected_flags(index)))
                result = self.source.emit("push-buffer", buffer)
            if result not in (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING):
                return


def pipeline_description(spec: dict, frames: np.ndarray) -> str:
    _, height, width, _ = frames.shape
    properties = " ".join(f"{key}={value}" for key, value in spec["properties"].items())
    branches = []
    for n in range(spec.get("streams", 1)):
        element = ""
        if spec.get("element", True):
            element = (
                f"! segmentation name=segmentation{n} {properties} "
                f"! {spec.get('output_caps', 'video/x-raw')} "
            )
        branches.append(
            f"appsrc name=src{n} format=time is-live={str(spec.get('live', False)).lower()} "
            f"stream-type={'seekable' if spec.get('seek') else 'stream'} "
            f"caps=video/x-raw,format=RGB,width={width},height={height},"
            f"framerate={spec.get('fps', 30)}/1 "
            f"! videoconvert ! video/x-raw,format={spec['input_format']} {element}"
            f"! appsink name=sink{n} sync=false"
        )
    return " ".join(branches)


def run(spec: dict) -> dict:
    Gst.init(None)
    Gst.Element.register(None, "segmentation", Gst.Rank.NONE, SegmentationFilter)
    frames = np.load(spec["frames"])
    pipeline = Gst.parse_launch(pipeline_description(spec, frames))
    branches = [Branch(pipeline, n, frames, spec) for n in range(spec.get("streams", 1))]
    bus = pipeline.get_bus()
    cpu_started, wall_started, threads_started = _cpu_s(), time.monotonic(), _thread_cpu_s()
    pipeline.set_state(Gst.State.PLAYING)
    for branch in branches:
        branch.pusher.start()
    timeout_ns = spec.get("timeout_s", 60) * Gst.SECOND
    ends = Gst.MessageType.EOS | Gst.MessageType.ERROR
    if spec.get("seek"):
        while len(branches[0].out) < spec["seek"]["after"]:
            if bus.timed_pop_filtered(10 * Gst.MSECOND, ends) is not None:
                raise RuntimeError("the pipeline ended before the seek")
        position_ns = spec["seek"]["to_frame"] * (Gst.SECOND // spec.get("fps", 30))
        for branch in branches:
            branch.hold()
        # A flushing seek returns once its flush is over, on this thread.
        seeked = pipeline.seek_simple(
            Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE, position_ns
        )
        for branch in branches:
            branch.resume()
        assert seeked, "the pipeline refused the seek"
    message = bus.timed_pop_filtered(timeout_ns, ends)
    cpu_s, wall_s = _cpu_s() - cpu_started, time.monotonic() - wall_started
    threads = _thread_cpu_s()
    first = branches[0]
    result = {
        "ended": None if message is None else Gst.MessageType.get_name(message.type),
        "error": None,
        "caps": first.samples[0].get_caps().to_string() if first.samples else None,
        "pts": [out[0] for out in first.out],
        "durations": [out[1] for out in first.out],
        "offsets": [out[2] for out in first.out],
        "flags": [out[3] for out in first.out],
        "frames_out": sum(len(branch.out) for branch in branches),
        "cpu_s": cpu_s,
        "thread_cpu_s": {name: threads[name] - threads_started.get(name, 0) for name in threads},
        "wall_s": wall_s,
    }
    if first.element is not None:
        latency = Gst.Query.new_latency()
        first.element.get_static_pad("src").query(latency)
        result["latency_ns"] = list(latency.parse_latency())
        result["frames_dropped"] = sum(b.element.get_property("frames-dropped") for b in branches)
        result["reconnects"] = sum(b.element.get_property("reconnects") for b in branches)
    if message is not None and message.type == Gst.MessageType.ERROR:
        error, _ = message.parse_error()
        result["error"] = {"domain": error.domain, "code": error.code, "message": error.message}
    for branch in branches:
        branch.stop()
    pipeline.set_state(Gst.State.NULL)
    if first.samples and spec.get("save"):
        np.save(spec["save"], np.stack([_bytes(sample) for sample in first.samples]))
    return result


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's live threads, by thread name."""
    ticks: dict[str, int] = {}
    for _tid, name, ticks_of_thread in thread_ticks("self"):
        ticks[name] = ticks.get(name, 0) + ticks_of_thread
    return {name: count / os.sysconf("SC_CLK_TCK") for name, count in ticks.items()}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bytes(sample: Gst.Sample) -> np.ndarray:
    buffer = sample.get_buffer()
    return np.frombuffer(buffer.extract_dup(0, buffer.get_size()), np.uint8)


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        print(json.dumps(run(json.load(file))))
