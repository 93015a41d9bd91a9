"""The layout of service/ is its architecture: each layer imports only the layers below it,
nothing imports in a cycle, every module opens with a docstring naming its one job, and none
is over 300 lines. A change that breaks one of these fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).parents[2] / "service"
MAX_LINES = 300

# Top to bottom. A module may import its own layer's modules and any layer below; the two
# siblings of one row may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("service.main",),
    ("service.app",),
    ("service.api",),
    ("service.config",),
    ("service.streams",),
    ("service.frames",),
    ("service.engines", "service.batching"),
    (
        "service.errors",
        "service.metrics",
        "service.clock",
        "service.threads",
        "service.timing",
        "service.settings_parsing",
    ),
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SERVICE.rglob("*.py"):
        parts = path.relative_to(SERVICE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path) -> set[str]:
    """The service modules `path` imports, wherever in the file (imports inside functions
    count: they are deferred, not exempt)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = _modules()
    return {name for name in found if name in modules and name.startswith("service.")}


def _place(module: str) -> tuple[int, str]:
    """The module's layer (0 at the top) and the unit in it that it belongs to."""
    for row, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return row, unit
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _graph() -> dict[str, set[str]]:
    return {module: _imports(path) for module, path in _modules().items()}


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imports in graph.items():
        if module == "service":
            continue
        row, unit = _place(module)
        for imported in imports:
            imported_row, imported_unit = _place(imported)
            if imported_row < row or (imported_row == row and imported_unit != unit):
                wrong.append(f"{module} (layer {row}) imports {imported} (layer {imported_row})")
    return sorted(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return [*trail, module]
        if module in done:
            return None
        for imported in graph.get(module, ()):
            if (found := visit(imported, [*trail, module])) is not None:
                return found
        done.add(module)
        return None

    for module in graph:
        if (found := visit(module, [])) is not None:
            return found
    return None


def test_every_module_is_in_a_layer_and_imports_only_downwards() -> None:
    wrong = _upward_imports(_graph())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_in_service() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_an_upward_import_a_sibling_import_and_a_cycle() -> None:
    # The checks must be able to fail.
    assert _upward_imports({"service.batching.runner": {"service.api.servicer"}})
    assert _upward_imports({"service.batching.runner": {"service.engines.base"}})
    assert not _upward_imports({"service.frames.pipeline": {"service.batching.runner"}})
    assert _cycle({"service.a": {"service.b"}, "service.b": {"service.a"}}) is not None


def test_every_module_opens_with_its_job_and_stays_small() -> None:
    for module, path in _modules().items():
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{module} opens with no docstring"
        lines = text.count("\n")
        assert lines <= MAX_LINES, f"{module} has {lines} lines, over {MAX_LINES}"
