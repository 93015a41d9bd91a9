"""The facts the documents state that the code can check: every repository path and module
they cite exists, and every engine the code builds is named wherever the engines are listed.
The image's size is checked against the built image by the container test."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import get_args

from service.engines.selection import EngineName
from tests.test_readme import code_block_lines

ROOT = Path(__file__).parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "loadtest" / "README.md",
]
# A path inside the repository, in backticks: `service/frames/selection.py`, `tests/x.py::test`.
CITED_PATH = re.compile(r"`((?:service|clients|loadtest|tests|models|deploy|proto|docs)/[\w./-]*)")
CITED_MODULE = re.compile(r"python -m ([a-z_][\w.]*)")
CITED_SCRIPT = re.compile(r"\bbash ((?:loadtest|deploy|tests)/[\w./-]+\.sh)")
ENGINES = [name for name in get_args(EngineName) if name != "auto"]
# A command of ours that starts a line of a fenced code block: `segmentation-loadtest run ...`.
COMMAND_LINE = re.compile(r"^\s*(?:\$ )?(segmentation-[a-z-]+)\b")
DISTRIBUTIONS = [ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml"]


def test_every_repository_path_a_document_cites_exists() -> None:
    missing = [
        f"{document.relative_to(ROOT)}: {path}"
        for document in DOCUMENTS
        for pattern in (CITED_PATH, CITED_SCRIPT)
        for path in (match.group(1).rstrip(".") for match in pattern.finditer(document.read_text()))
        if not (ROOT / path).exists()
    ]
    assert not missing, "documents cite paths that do not exist:\n" + "\n".join(missing)


def test_every_module_a_document_runs_with_python_m_exists() -> None:
    modules = {
        match.group(1)
        for document in [*DOCUMENTS, ROOT / "Makefile"]
        for match in CITED_MODULE.finditer(document.read_text())
    }
    assert modules, "no `python -m` command found: the pattern no longer matches the documents"
    missing = sorted(module for module in modules if importlib.util.find_spec(module) is None)
    assert not missing, f"documents run modules that do not exist: {missing}"


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
