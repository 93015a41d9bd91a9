"""The proto as an API for every language: buf lint keeps its rules (proto/buf.yaml), each
frame error reason of the server has its enum value, and the options name each language's
package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from segmentation.v1 import segmentation_pb2 as pb
from service.api.protocol import WIRE_ERROR_CODES
from service.errors import FrameErrorReason
from tests.integration.conformance.node_package import NODE_CLIENT, built_node_client

PROTO = NODE_CLIENT.parents[1] / "proto"
BUF = NODE_CLIENT / "node_modules" / ".bin" / "buf"


def buf_lint(proto_root: Path) -> subprocess.CompletedProcess:
    built_node_client()  # buf comes with the Node client's dev tools
    return subprocess.run(
        [str(BUF), "lint", str(proto_root)], capture_output=True, text=True, timeout=120
    )


def test_buf_lint_passes_on_the_api() -> None:
    result = buf_lint(PROTO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_what_its_rules_forbid(tmp_path: Path) -> None:
    # The same API with a camelCase field and an enum value without its prefix.
    copy = Path(shutil.copytree(PROTO, tmp_path / "proto"))
    proto = copy / "segmentation" / "v1" / "segmentation.proto"
    text = proto.read_text()
    text = text.replace("uint64 frame_id = 1;", "uint64 frameId = 1;", 1)
    text = text.replace("MASK_ENCODING_PNG = 2;", "PNG = 2;")
    proto.write_text(text)
    result = buf_lint(copy)
    assert result.returncode != 0
    assert 'Field name "frameId" should be lower_snake_case' in result.stdout, result.stdout
    assert 'Enum value name "PNG" should be prefixed with "MASK_ENCODING_"' in result.stdout


def test_every_frame_error_reason_has_its_enum_value_and_string() -> None:
    assert set(WIRE_ERROR_CODES) == set(FrameErrorReason)
    for reason, code in WIRE_ERROR_CODES.items():
        assert pb.FrameErrorReason.Name(code) == f"FRAME_ERROR_REASON_{reason.name}"
    # The server's reasons, the client's "reconnecting", and none for an answer without error.
    server = {f"FRAME_ERROR_REASON_{reason.name}" for reason in FrameErrorReason}
    assert set(pb.FrameErrorReason.keys()) == server | {
        "FRAME_ERROR_REASON_UNSPECIFIED", "FRAME_ERROR_REASON_RECONNECTING",
    }  # fmt: skip


def test_each_language_has_its_package() -> None:
    options = pb.DESCRIPTOR.GetOptions()
    assert options.go_package.endswith(";segmentationv1")
    assert options.java_package == "com.segmentation.v1" and options.java_multiple_files
    assert options.csharp_namespace == "Segmentation.V1"
