"""The facts the documents state that the code can check: every repository path they cite
exists, every command they run is installed, and every engine the code builds is named wherever
the engines are listed. The modules and scripts they run are checked by test_readme, the image's
size against the built image by the container test."""

from __future__ import annotations

import re
import tomllib
from typing import get_args

from service.engines.selection import EngineName
from tests.test_readme import DOCUMENTS, ROOT, code_block_lines

# A path inside the repository, in backticks: `service/frames/selection.py`, `tests/x.py::test`.
CITED_PATH = re.compile(r"`((?:service|clients|loadtest|tests|models|deploy|proto|docs)/[\w./-]*)")
ENGINES = [name for name in get_args(EngineName) if name != "auto"]
# A command of ours that starts a line of a fenced code block: `segmentation-loadtest run ...`.
COMMAND_LINE = re.compile(r"^\s*(?:\$ )?(segmentation-[a-z-]+)\b")
DISTRIBUTIONS = [ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml"]


def test_every_repository_path_a_document_cites_exists() -> None:
    missing = [
        f"{document.relative_to(ROOT)}: {path}"
        for document in DOCUMENTS
        for match in CITED_PATH.finditer(document.read_text())
        if not (ROOT / (path := match.group(1).rstrip("."))).exists()
    ]
    assert not missing, "documents cite paths that do not exist:\n" + "\n".join(missing)


def test_every_engine_is_named_where_the_engines_are_listed() -> None:
    settings_row = next(
        line
        for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
        if line.startswith("| `engine` |")
    )
    proto = (ROOT / "proto" / "segmentation" / "v1" / "segmentation.proto").read_text()
    proto_engines = re.search(r"//[^\n]*\"tflite\"[^\n]*(?:\n\s*//[^\n]*)*", proto)
    assert proto_engines, "the proto's comment listing the engines is gone"
    for where, text in [("configuration.md's engine row", settings_row),
                        ("the proto's engine comment", proto_engines.group(0))]:  # fmt: skip
        unnamed = [engine for engine in ENGINES if f"`{engine}`" not in text and
                   f'"{engine}"' not in text]  # fmt: skip
        assert not unnamed, f"{where} does not name {unnamed}"


def test_every_command_a_document_runs_is_an_installed_script() -> None:
    scripts = {
        name
        for distribution in DISTRIBUTIONS
        for name in tomllib.loads(distribution.read_text())["project"]["scripts"]
    }
    commands = {
        f"{document.relative_to(ROOT)}: {match.group(1)}"
        for document in DOCUMENTS
        for line in code_block_lines(document.read_text())
        if (match := COMMAND_LINE.match(line))
    }
    assert commands, "no command found: the pattern no longer matches the documents"
    unknown = sorted(entry for entry in commands if entry.split(": ")[1] not in scripts)
    assert not unknown, f"documents run commands no distribution installs: {unknown}"
