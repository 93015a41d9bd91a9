"""The README and the guides in docs/ say what the code does: the command CI runs, every
setting with its default, every folder and top-level module of `service/`, links that resolve,
make targets that exist, the modules, scripts and commands they run, the repository paths and
test files they cite, the engines wherever they are listed, and a test named by each row of the
table of faults in docs/api.md. The CPU image's size is checked against the image built, by its
test (tests/system/test_cpu_image.py)."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import get_args

from service.config import ServiceConfig
from service.engines.selection import EngineName

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
SETTINGS_GUIDE = ROOT / "docs" / "configuration.md"  # holds the settings table
TEST_COMMAND = "make test"  # what the README tells people to run, and all that CI runs
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")  # [text](target#fragment)
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "loadtest" / "README.md"]
FAULTS = ROOT / "docs" / "api.md"  # holds the table of faults, a test named by each row
FAULTS_HEADER = "| input or fault | what the caller gets | its test |"
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
TEST_FILE = re.compile(r"\btests/[\w/]+\.py\b")


def code_block_lines(markdown: str) -> list[str]:
    """The lines inside fenced code blocks, without their shell comments."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.split(" #")[0].strip())
    return lines


def section(markdown: str, heading: str) -> str:
    """The text under the `## heading` line, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def settings_rows() -> dict[str, str]:
    """Each setting's row of the settings table, by setting name."""
    rows = {}
    for line in SETTINGS_GUIDE.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_ci_runs_the_readme_test_command() -> None:
    shown = code_block_lines(README.read_text())
    assert TEST_COMMAND in shown, f"the README shows no `{TEST_COMMAND}` line in a code block"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci_lines if line][-1] == TEST_COMMAND


def test_every_setting_has_a_row_in_the_settings_table() -> None:
    rows = settings_rows()
    missing = [setting.name for setting in fields(ServiceConfig) if setting.name not in rows]
    assert not missing, f"settings missing from the table in {SETTINGS_GUIDE.name}: {missing}"
    unknown = sorted(set(rows) - {setting.name for setting in fields(ServiceConfig)})
    assert not unknown, f"rows in {SETTINGS_GUIDE.name} for settings that do not exist: {unknown}"


def test_the_documented_defaults_are_the_config_defaults() -> None:
    rows = settings_rows()
    defaults = ServiceConfig.from_args([], environ={})
    for setting in fields(ServiceConfig):
        documented = rows[setting.name].split("|")[2].strip()
        value = getattr(defaults, setting.name)
        if documented == "CPU count" or setting.name == "model_dir":
            continue  # machine-dependent
        if documented == "empty":
            assert value == "", setting.name
            continue
        shown = documented.split("`")[1]
        if isinstance(value, bool):
            expected = "true" if value else "false"
        elif isinstance(value, tuple):
            expected = ",".join(map(str, value))
        elif isinstance(value, float):
            expected = f"{value:g}"
        else:
            expected = str(value)
        assert shown == expected, f"{setting.name}: the table says {shown}, the config {expected}"


def test_the_layout_table_names_every_folder_and_top_level_module_of_service() -> None:
    layout = section(README.read_text(), "Layout")
    service = ROOT / "service"
    folders = [
        f"service/{path.name}/"
        for path in service.iterdir()
        if path.is_dir() and not path.name.startswith(("_", "."))  # not __pycache__
    ]
    modules = [f"service/{path.name}" for path in service.glob("[!_]*.py")]
    assert folders and modules
    missing = [name for name in sorted(folders + modules) if f"`{name}`" not in layout]
    assert not missing, f"the README's layout table does not name {missing}"


def test_links_between_the_documents_resolve() -> None:
    broken = []
    for document in DOCUMENTS:
        for target, fragment in LINK.findall(document.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            linked = (document.parent / target).resolve() if target else document
            if not linked.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
            elif fragment and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                if fragment not in {anchor(heading.replace("`", "")) for heading in headings}:
                    broken.append(f"{document.relative_to(ROOT)}: {target}#{fragment}")
    assert not broken, f"links that lead nowhere: {broken}"


def test_the_modules_and_scripts_the_documents_run_exist() -> None:
    """`python -m NAME` and `bash PATH` in the documents and the Makefile: a module that runs
    (a package with its `__main__`) and a script that is there, so that a move renames them
    everywhere at once."""
    missing = []
    for document in [*DOCUMENTS, ROOT / "Makefile"]:
        text = document.read_text()
        for module in set(re.findall(r"\bpython3? -m ([A-Za-z_][\w.]*\w)", text)) - {"venv"}:
            spec = importlib.util.find_spec(module)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(f"{module}.__main__")
            if spec is None:
                missing.append(f"{document.relative_to(ROOT)}: python -m {module}")
        for script in set(re.findall(r"\bbash ([\w./-]+\.sh)\b", text)):
            if not (ROOT / script).is_file():
                missing.append(f"{document.relative_to(ROOT)}: bash {script}")
    assert not missing, f"commands that name nothing: {sorted(missing)}"


def test_the_make_commands_cited_exist_and_take_no_options() -> None:
    """`make bench --baseline` is what make refuses: the options belong to the scripts."""
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    wrong = []
    for document in DOCUMENTS:
        text = document.read_text()
        commands = code_block_lines(text) + re.findall(r"`([^`\n]+)`", text)
        for command in commands:
            for target, option in re.findall(r"\bmake ([\w-]+)(\s+-\S+)?", command):
                if target not in targets or option:
                    wrong.append(f"{document.relative_to(ROOT)}: make {target}{option}")
    assert not wrong, f"make commands that make refuses: {wrong}"


def fault_rows() -> list[str]:
    """The rows of the table of faults, header and rule left out."""
    lines = FAULTS.read_text().splitlines()
    assert FAULTS_HEADER in lines, f"{FAULTS.name} has no table of faults headed {FAULTS_HEADER!r}"
    rows = []
    for line in lines[lines.index(FAULTS_HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions a test module defines at its top level."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_row_of_the_table_of_faults_names_tests_that_exist() -> None:
    rows = fault_rows()
    assert len(rows) >= 20, f"the table of faults has only {len(rows)} rows: misparsed?"
    untested, missing = [], []
    for row in rows:
        fault = row.split("|")[1].strip()
        named = NAMED_TEST.findall(row.split("|")[-2])  # the row's last cell
        if not named:
            untested.append(fault)
        for path, name in named:
            module = ROOT / path
            if not module.is_file() or name not in defined_tests(module):
                missing.append(f"{fault}: {path}::{name}")
    assert not untested, f"rows of the table of faults that name no test: {untested}"
    assert not missing, f"tests named by the table of faults that do not exist: {missing}"


def test_the_test_files_the_documents_name_exist() -> None:
    documents = [*DOCUMENTS, ROOT / "deploy" / "prometheus" / "README.md"]
    named = {
        (document.relative_to(ROOT), path)
        for document in documents
        for path in TEST_FILE.findall(document.read_text())
    }
    assert named, "no document names a test file: the pattern is broken"
    missing = sorted(
        f"{document}: {path}" for document, path in named if not (ROOT / path).is_file()
    )
    assert not missing, f"test files named that do not exist: {missing}"


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
