"""`segmentation-server`: builds the config once, then runs the service until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service.config import ServiceConfig

log = logging.getLogger("service")


async def _serve(config: ServiceConfig) -> bool:
    """Serves until a signal; returns False when an engine failed beyond recovery."""
    from service.app import running_server

    stop = asyncio.Event()
    ready = asyncio.Event()
    failed = False
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def serve_until_stopped() -> None:
        nonlocal failed
        async with running_server(config) as service:
            ready.set()
            waits = [asyncio.create_task(event.wait()) for event in (stop, service.failed)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            failed = service.failed.is_set()
            log.info("shutting down: open streams get %.1f s to finish", config.shutdown_grace_s)

    serving = asyncio.create_task(serve_until_stopped())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set() and not ready.is_set():
        log.info("shutting down during start-up")
        serving.cancel()  # still loading: nothing to drain
    stopped.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    return not failed


def _prepare_models(config: ServiceConfig) -> None:
    """Fetches and checks the model files, and converts them for the TensorFlow engine where
    it may serve: asked for, or `auto` where TensorFlow is installed (a GPU image)."""
    from models.fetch import ensure_model_files
    from models.registry import model_spec

    specs = [model_spec(name) for name in config.models]
    model_dir = Path(config.model_dir)
    tensorflow_may_serve = config.engine == "tensorflow" or (
        config.engine == "auto" and importlib.util.find_spec("tensorflow") is not None
    )
    if not tensorflow_may_serve:
        for name, path in ensure_model_files(specs, model_dir, fetch=True).items():
            print(f"{name}: {path} (sha256 checked)")
        return
    from models.convert import ensure_savedmodels

    for name, (tflite, savedmodel) in ensure_savedmodels(specs, model_dir, fetch=True).items():
        print(f"{name}: {tflite} (sha256 checked)")
        print(f"{name}: {savedmodel} (TensorFlow SavedModel)")


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux), else asyncio's own.
    grpc.aio runs on it unchanged, and each frame's wake-ups (a codec thread's result, a batch
    done, gRPC's completions) cost the loop less CPU than on asyncio's selector loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    config = ServiceConfig.from_args(argv)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.fetch_models_only:
        _prepare_models(config)
        return
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        if not runner.run(_serve(config)):
            sys.exit(1)  # an engine failed beyond recovery (logged): the orchestrator restarts us


if __name__ == "__main__":
    main()
