"""What a stream costs the client's process per frame, the Node client beside the Python
library: the same frames, to the same server, in the same run, through each client's
conformance driver. Prints the figures; asserts nothing.

    python -m tests.integration.conformance.client_cpu [--frames 300] [--fps 60] [--rounds 2]

Each driver's CPU time (user + system, from the kernel's accounting of the finished process) is
measured for a long and a short stream; their difference over the difference in frames is the
CPU per frame with the start-up (interpreter, imports, channel) taken out. The rounds alternate
the clients' order, so that neither always runs first."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from loadtest.local_server import ServerProcess
from tests.integration.conformance.node_package import built_node_client
from tests.integration.conformance.scenarios import start_driver
from tests.photos import video_frame_jpeg
from tests.replicas import REPLICA_FLAGS

ROOT = Path(__file__).parents[3]
DRIVERS = {
    "python": (sys.executable, "-m", "tests.integration.conformance.python_driver"),
    "node": ("node", str(ROOT / "tests" / "integration" / "conformance" / "node_driver.js")),
}
SHORT_FRAMES = 30


def run_driver(argv: tuple[str, ...], spec: dict) -> tuple[float, dict]:
    """Runs a driver to its end and reads its CPU time off the kernel's accounting."""
    before = os.times()
    process = start_driver(argv, spec, ROOT)
    out, err = process.communicate(timeout=300)
    after = os.times()
    assert process.returncode == 0, err
    used = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return used, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    built_node_client()
    folder = Path(tempfile.mkdtemp(prefix="client-cpu-"))
    jpegs = []
    for n in range(8):
        path = folder / f"frame-{n}.jpg"
        path.write_bytes(video_frame_jpeg(args.width, args.height, shift=4 * n))
        jpegs.append(str(path))
    per_frame: dict[str, list[float]] = {name: [] for name in DRIVERS}
    with ServerProcess(*REPLICA_FLAGS) as server:
        for round_index in range(args.rounds):
            names = list(DRIVERS) if round_index % 2 == 0 else list(reversed(DRIVERS))
            for name in names:
                used = {}
                for frames in (args.frames, SHORT_FRAMES):
                    spec = {"target": server.target, "jpegs": jpegs, "frames": frames,
                            "fps": args.fps}  # fmt: skip
                    used[frames], result = run_driver(DRIVERS[name], spec)
                    answered = len(result["answers"])
                    assert answered == frames and result["error"] is None, result["error"]
                ms = (used[args.frames] - used[SHORT_FRAMES]) / (args.frames - SHORT_FRAMES) * 1e3
                per_frame[name].append(ms)
                print(f"round {round_index + 1}, {name}: {ms:.3f} CPU-ms a frame "
                      f"({used[args.frames]:.2f} s for {args.frames} frames, "
                      f"{used[SHORT_FRAMES]:.2f} s for {SHORT_FRAMES})")  # fmt: skip
    python_ms = sum(per_frame["python"]) / args.rounds
    node_ms = sum(per_frame["node"]) / args.rounds
    print(f"\n{args.width}x{args.height} JPEG frames at {args.fps:g} FPS, raw masks back: "
          f"python {python_ms:.3f} CPU-ms a frame, node {node_ms:.3f} "
          f"(node / python {node_ms / python_ms:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
