"""`segmentation-server`: builds the config once, then runs the service until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from service.config import ServiceConfig

log = logging.getLogger("service")


async def _serve(config: ServiceConfig) -> None:
    from service.app import running_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_server(config):
        await stop.wait()
        log.info("shutting down: open streams get %.1f s to finish", config.shutdown_grace_s)


def main(argv: Sequence[str] | None = None) -> None:
    config = ServiceConfig.from_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.fetch_models_only:
        from models.fetch import ensure_model_files
        from models.registry import model_spec

        paths = ensure_model_files(
            [model_spec(name) for name in config.models], Path(config.model_dir), fetch=True
        )
        for name, path in paths.items():
            print(f"{name}: {path} (sha256 checked)")
        return
    asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
