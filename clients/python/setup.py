"""Generates the protobuf and gRPC stubs from proto/ while the wheel is built: they ship in
the wheel and are never committed."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
# A link to the repository's proto/, so that an sdist carries the API too.
PROTO_ROOT = HERE / "proto"
PROTO = "segmentation/v1/segmentation.proto"


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        # An editable install imports from the source tree, so the stubs go there.
        out = HERE if self.editable_mode else Path(self.build_lib)
        generate_stubs(out)
        super().run()


def generate_stubs(out: Path) -> None:
    from grpc_tools import protoc

    (out / "segmentation" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO}")


setup(cmdclass={"build_py": BuildPyWithStubs})
