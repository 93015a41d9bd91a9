"""The README and the guides in docs/ say what the code does: the command CI runs, every
setting with its default, every folder and top-level module of `service/`, links that resolve,
make targets that exist, test files that exist, and a test named by each row of the table of
faults in docs/api.md."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from service.config import ServiceConfig

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
