"""The Python library's driver of the conformance scenarios: reads a scenario's spec (JSON,
argv[1]), streams its frames through `SegmentationClient.stream()`, prints what it saw (JSON).

Spec and output are the same for every client's driver (see scenarios.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from segmentation.v1 import segmentation_pb2 as pb
from segmentation_client import FrameToSend, RetryPolicy, SegmentationClient, SegmentationError

STATUS_NAMES = {value: name for name, value in pb.StreamSegmentResponse.Status.items()}
ERROR_CODE_NAMES = {value: name for name, value in pb.FrameErrorReason.items()}


async def run(spec: dict) -> dict:
    jpegs = [Path(path).read_bytes() for path in spec["jpegs"]]
    corrupt = set(spec.get("corrupt", ()))
    pause_after, pause_s = spec.get("pause_after_frame", -1), spec.get("pause_s", 0.0)
    policy = RetryPolicy(
        answer_timeout_s=spec.get("answer_timeout_s", 2.0),
        give_up_after_s=spec.get("give_up_after_s", 15.0),
    )
    pem = {name: Path(spec[name]).read_bytes() if spec.get(name) else None
           for name in ("root_certificates", "client_certificate", "client_key")}  # fmt: skip
    async with SegmentationClient(
        spec["target"], token=spec.get("token") or None, retry_policy=policy, **pem
    ) as client:

        async def camera() -> AsyncIterator[FrameToSend]:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for frame_id in range(spec["frames"]):  # open loop at the spec's rate
                at = started + frame_id / spec["fps"] + (pause_s if frame_id > pause_after else 0)
                await asyncio.sleep(max(0.0, at - loop.time()))
                jpeg = jpegs[frame_id % len(jpegs)]
                if frame_id in corrupt:
                    jpeg = b"this is not a JPEG"
                yield FrameToSend(frame_id, jpeg, capture_timestamp_us=frame_id * 33_333)

        stream = client.stream(
            camera(),
            stream_id=spec.get("stream_id", ""),
            model=spec.get("model", ""),
            reopen_after_silence=spec.get("reopen_after_silence", False),
        )
        answers, error = [], None
        try:
            async for r in stream:
                code = ERROR_CODE_NAMES[r.error_code]
                answers.append(
                    [r.frame_id, STATUS_NAMES[r.status], r.error_reason, code, bool(r.mask.data),
                     r.capture_timestamp_us]
                )  # fmt: skip
        except SegmentationError as failure:
            error = {"code": failure.code.name, "details": failure.details}
    return {
        "answers": answers,
        "error": error,
        "reconnects": stream.stats.reconnects,
        "dropped_locally": stream.stats.frames_dropped_locally,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
