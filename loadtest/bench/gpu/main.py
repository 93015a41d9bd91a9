"""The GPU figures, in one run that ends within its deadline (5 minutes by default) on the GPU
host, in sections that cannot lose each other's figures (`run.py`). Self-checks first, so a
run that goes wrong says where before the long load sections:

    environment      torch, CUDA, cuDNN, torchvision and its build, the GPU and its driver, the
                     float32 (TF32) flags, grpc and protobuf, the libturbojpeg found
    frame-path       which path and precision each model got and why; graphs per batch size
    decode-accuracy  32 distinct frames, 640x480 and 1280x720, decoded on the device against
                     libjpeg-turbo: the maximum and mean difference per frame
    damaged-frames   truncated, bit-flipped, zeroed and progressive frames, alone and beside
                     good ones, through both paths; whether the device synchronises after each
    encode-race      three engine threads encoding at once, work queued on their own streams
    composites       the GPU path against the CPU path at batch 1 and 8, colour and blur
    graphs           graph against eager per batch size; three threads at once against one
    memory           allocated and reserved, after warm-up and after 200 batches
    model            ms per frame by batch size, float32 and float16
    path             the frame path's CPU-ms and GPU-ms (device events) per frame
    load-1, load-4   answered frames/s at saturation and the calls held at 30 FPS (p99 <= 100
                     ms, <= 1% dropped), 640x480 and 1280x720, with 1 and 4 server processes

Figures go to OUT/summary.txt and OUT/results.jsonl section by section. `--sections a,b`
reruns only those (the ones that failed). `--device cpu --quick` is the dry run on a CPU (one
resolution, at most 2 server processes, the device work through `CpuFrameDevice`, about two
minutes on 2 cores): it proves the script end to end, not the figures. The exit status is 1
when a section FAILED, 2 when CUDA was asked for and is missing.

    python -m loadtest.bench.gpu [--device cuda|cpu] [--out bench-gpu] [--quick]
                                 [--sections NAME,...] [--deadline-s 290]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from loadtest.bench.gpu import checks, composites, decode_checks, figures
from loadtest.bench.gpu.bench import Bench
from loadtest.bench.gpu.run import Deadline, Output, Section, run_sections

# In the order they run. The seconds are estimates (GPU host, CPU dry run): a section is
# skipped when less than that is left; the load sections need at least that and take more.
SECTIONS = [
    Section("environment", checks.environment, 5, 3),
    Section("frame-path", checks.frame_path, 30, 8),
    Section("decode-accuracy", decode_checks.decode_accuracy, 5, 3),
    Section("damaged-frames", decode_checks.damaged_frames, 8, 5),
    Section("encode-race", composites.encode_race, 10, 5),
    Section("composites", composites.composites, 5, 4),
    Section("graphs", checks.graphs, 15, 0, needs_cuda=True),
    Section("memory", checks.memory, 15, 0, needs_cuda=True),
    Section("model", figures.model, 25, 5),
    Section("path", figures.path, 15, 8),
    Section("load-1", figures.load_1, 40, 20),
    Section("load-4", figures.load_4, 50, 25),
]
NAMES = [section.name for section in SECTIONS]


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _sections(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown sections {unknown}; the sections: {NAMES}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--device", default="cuda", help="cuda (cuda:N) or cpu; cuda fails at once without CUDA")
    add("--model", default="selfie-general")
    add("--models", default="selfie-general,selfie-landscape", help="for frame-path")
    add("--model-dir", type=Path, default=None)
    add("--out", type=Path, default=Path("bench-gpu"))
    add("--sections", type=_sections, default=NAMES, help=f"a subset of {','.join(NAMES)}")
    add("--deadline-s", type=float, default=None, help="the whole run's (290; quick: 170)")
    add("--batches", type=_numbers, default=_numbers("1,2,4,8,16,32,64,128,256"))
    add("--server-batches", type=_numbers, default=_numbers("1,2,4,8,16,32,64"))
    add("--resolutions", default="640x480,1280x720")
    add("--load-servers", type=int, default=4, help="server processes for load-4")
    add("--generators", type=int, default=6, help="load generator processes")
    add("--saturation-calls", type=int, default=400, help="per server process")
    add("--hold-s", type=float, default=4.0)
    add("--warm-up-s", type=float, default=2.0)
    add("--path-batch", type=int, default=32)
    add("--threads", type=int, default=None, help="torch's CPU threads")
    add(
        "--race-control",
        action="store_true",
        help="encode-race also runs nvJPEG's encode unordered, to show the check sees the race",
    )
    add("--quick", action="store_true", help="small sizes, short runs: a dry run on a CPU")
    args = parser.parse_args(argv)
    args.resolutions = args.resolutions.split(",")
    args.models = args.models.split(",")
    cuda = args.device.startswith("cuda")
    if args.device == "cuda":
        args.device = "cuda:0"  # one name for the device everywhere (torch, the engine, events)
    args.precisions = ("float32", "float16") if cuda else ("float32",)
    args.model_runs, args.path_runs = (50, 5) if cuda else (3, 1)
    args.decode_frames, args.race_batch, args.race_rounds = 32, 8, 10
    args.composite_batches = [1, 8]
    if args.quick:
        args.models, args.resolutions = args.models[:1], args.resolutions[:1]
        args.batches, args.server_batches = args.batches[:3], args.server_batches[:3]
        args.path_batch, args.saturation_calls = 4, 6
        args.load_servers, args.generators = min(args.load_servers, 2), 1
        args.hold_s, args.warm_up_s = min(args.hold_s, 2.0), min(args.warm_up_s, 1.0)
        args.decode_frames, args.race_batch, args.race_rounds = 4, 2, 2
        args.composite_batches = [1, 2]
    if args.deadline_s is None:
        args.deadline_s = 170.0 if args.quick else 290.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()  # the deadline counts from here, imports included
    args = parse_args(argv)
    import torch

    from models.fetch import default_model_dir

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
              f"(torch.version.cuda={torch.version.cuda})", file=sys.stderr)  # fmt: skip
        return 2
    deadline = Deadline(args.deadline_s - (time.monotonic() - started))
    args.model_dir = args.model_dir or default_model_dir()
    out = Output(args.out)
    out.line(f"# loadtest.bench.gpu on {args.device}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
             f"sections {','.join(args.sections)}, deadline {args.deadline_s:.0f} s")  # fmt: skip
    bench = Bench(args, out, deadline)
    try:
        chosen = [section for section in SECTIONS if section.name in args.sections]
        statuses = run_sections(bench, chosen, out)
    finally:
        bench.close()
    failed = [name for name, status in statuses.items() if status == "FAILED"]
    out.line(f"\ndone in {deadline.elapsed_s():.0f} s; failed: {','.join(failed) or 'none'}; "
             f"figures in {args.out}/")  # fmt: skip
    if failed:
        out.line(f"rerun the failed ones with --sections {','.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
