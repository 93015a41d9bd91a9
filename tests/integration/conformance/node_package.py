"""The Node client built from its lock file, as `make test` builds it: `npm ci`, then the build
that generates its types from proto/."""

from __future__ import annotations

import subprocess
from pathlib import Path

NODE_CLIENT = Path(__file__).parents[3] / "clients" / "node"
# The conformance suite's driver of the Node client: a command line that runs one scenario.
DRIVER = ("node", str(Path(__file__).parent / "node_driver.js"))


def built_node_client() -> Path:
    """Installs and builds clients/node unless it is built from the current sources."""
    dist = NODE_CLIENT / "dist" / "index.js"
    sources = [*NODE_CLIENT.glob("src/*.ts"), NODE_CLIENT / "package-lock.json"]
    proto = NODE_CLIENT.parents[1] / "proto" / "segmentation" / "v1" / "segmentation.proto"
    newest = max(path.stat().st_mtime for path in [*sources, proto])
    if not dist.exists() or dist.stat().st_mtime < newest:
        if not (NODE_CLIENT / "node_modules").exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True)
        subprocess.run(["npm", "run", "build"], cwd=NODE_CLIENT, check=True)
    return NODE_CLIENT
