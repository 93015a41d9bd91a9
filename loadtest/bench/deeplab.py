"""DeepLab's cost per frame run one at a time (the graph's own batch-1 path, what the server
falls back to) against its network batched at 8, on the zoo-shaped stand-in graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from models.deeplab import DeepLabModel
from models.deeplab_batched import BatchedDeepLab
from models.deeplab_check import check_images
from models.deeplab_standin import write_frozen_graph
from service.timing import median_ms


def bench_deeplab(batch: int = 8, runs: int = 5) -> tuple[float, float]:
    """Prints and returns ms/frame one at a time and batched at `batch`."""
    with tempfile.TemporaryDirectory() as folder:
        own = DeepLabModel(write_frozen_graph(Path(folder) / "frozen_inference_graph.pb"))
    batched = BatchedDeepLab(own.graph_def)
    frames = np.concatenate([check_images()] * (batch // 4 + 1))[:batch]
    one_at_a_time = median_ms(lambda: [own(frame) for frame in frames], runs) / batch
    together = median_ms(lambda: batched(frames), runs) / batch
    print(
        f"\nDeepLab stand-in (zoo-shaped graph, 513x513), ms/frame, median of {runs} runs: "
        f"one at a time {one_at_a_time:.1f}, batched at {batch} {together:.1f} "
        f"({one_at_a_time / together:.2f}x)"
    )
    return one_at_a_time, together


if __name__ == "__main__":
    bench_deeplab()
