"""`segmentation-server`: builds the config once, then runs the service until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from service.config import ServiceConfig

log = logging.getLogger("service")


async def _serve(config: ServiceConfig) -> None:
    from service.app import running_server

    stop = asyncio.Event()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def serve_until_stopped() -> None:
        async with running_server(config):
            ready.set()
            await stop.wait()
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


def _prepare_models(config: ServiceConfig) -> None:
    """Fetches and checks the model files, and converts them for the TensorFlow engine when it
    may serve them."""
    from models.convert import ensure_savedmodels
    from models.fetch import ensure_model_files
    from models.registry import model_spec
    from service.engine import tensorflow_available

    specs = [model_spec(name) for name in config.models]
    model_dir = Path(config.model_dir)
    lean = config.engine == "auto" and not tensorflow_available()  # auto serves TFLite then
    if config.engine in ("tflite", "model-free") or lean:
        for name, path in ensure_model_files(specs, model_dir, fetch=True).items():
            print(f"{name}: {path} (sha256 checked)")
        return
    for name, (tflite, savedmodel) in ensure_savedmodels(specs, model_dir, fetch=True).items():
        print(f"{name}: {tflite} (sha256 checked)")
        print(f"{name}: {savedmodel} (TensorFlow SavedModel)")


def main(argv: Sequence[str] | None = None) -> None:
    config = ServiceConfig.from_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.fetch_models_only:
        _prepare_models(config)
        return
    asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
