"""The torch engine's CUDA graphs: one set per batch in flight, a graph per batch size.

Each set owns its stream, its graphs with their static device buffers and its pinned host
buffers, so batches on several engine threads overlap their copies and their kernels. A batch
size whose graph fails to capture keeps its buffers and runs eagerly on the set's stream; the
other sizes keep their graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """What one batch in flight owns on CUDA. Nothing here is shared with another batch."""

    stream: Any
    pool: Any
    graphs: dict[int, Any] = field(default_factory=dict)  # only the sizes that captured
    device_in: dict[int, Any] = field(default_factory=dict)  # uint8 (n, H, W, 3)
    device_out: dict[int, Any] = field(default_factory=dict)  # float32 (n, H, W), graphs'
    host_in: dict[int, Any] = field(default_factory=dict)  # pinned
    host_out: dict[int, Any] = field(default_factory=dict)  # pinned


def run_size(
    slot: InFlight, module: torch.nn.Module, size: int, device_in: torch.Tensor
) -> torch.Tensor:
    """One padded run on the current stream: the size's graph, or the module eagerly."""
    graph = slot.graphs.get(size)
    if graph is None:
        return module(device_in)
    graph.replay()
    return slot.device_out[size]


def capture(
    module: torch.nn.Module,
    shape: Callable[[int], tuple[int, int, int, int]],
    batch_sizes: tuple[int, ...],
    device: str,
    name: str,
) -> InFlight:
    """One batch-in-flight set, every size run once on its stream before it returns."""
    import torch

    slot = InFlight(stream=torch.cuda.Stream(device), pool=torch.cuda.graph_pool_handle())
    # Largest first: the smaller graphs reuse the pool's blocks (one batch at a time runs in a
    # set, so its graphs never run at once).
    for size in sorted(batch_sizes, reverse=True):
        slot.device_in[size] = torch.zeros(shape(size), dtype=torch.uint8, device=device)
        try:
            _capture_size(slot, module, size)
        except Exception as error:  # serve this size eagerly rather than not at all
            log.warning(
                "%s: CUDA graph capture failed at batch %d, which runs eagerly: %s",
                name,
                size,
                error,
            )
            slot.graphs.pop(size, None)
        slot.host_in[size] = torch.zeros(shape(size), dtype=torch.uint8).pin_memory()
        slot.host_out[size] = torch.zeros(shape(size)[:3]).pin_memory()
    with torch.cuda.stream(slot.stream), torch.inference_mode():
        for size in batch_sizes:
            run_size(slot, module, size, slot.device_in[size])  # graph or eager, once
    slot.stream.synchronize()  # the stream they ran on
    return slot


def _capture_size(slot: InFlight, module: torch.nn.Module, size: int) -> None:
    import torch

    device_in = slot.device_in[size]
    with torch.inference_mode():
        slot.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(slot.stream):
            for _ in range(2):  # cuDNN picks its algorithms outside the capture
                module(device_in)
        torch.cuda.current_stream().wait_stream(slot.stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' CUDA work (a model already serving) goes on.
        with torch.cuda.graph(
            graph, pool=slot.pool, stream=slot.stream, capture_error_mode="thread_local"
        ):
            device_out = module(device_in)
    slot.graphs[size], slot.device_out[size] = graph, device_out
