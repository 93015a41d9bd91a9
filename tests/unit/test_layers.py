"""The layout is the architecture. In service/, each layer imports only the layers below it and
nothing imports in a cycle; between the folders, the server never imports the load tools or the
clients (only the stubs generated from proto/), models/ stands below the server, the clients
install without the server, and the load tool measures the server from outside. Every module of
service/, models/, loadtest/ and clients/ opens with a docstring naming its one job, and none is
over 300 lines. A change that breaks one of these fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
SERVICE = ROOT / "service"
MAX_LINES = 300
# Every Python module these folders hold, but the stubs generated from proto/ and what npm
# installs.
CHECKED_FOLDERS = ("service", "models", "loadtest", "clients")

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


def _imported_names(path: Path) -> set[str]:
    """Every absolute import of `path`, as the dotted names it imports, wherever in the file
    (imports inside functions count: they are deferred, not exempt)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _imports(path: Path) -> set[str]:
    """The service modules `path` imports."""
    modules = _modules()
    return {
        name for name in _imported_names(path) if name in modules and name.startswith("service.")
    }


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


# Between the folders, each rule: the files under a path (but those under the second path),
# the packages they never import, and why.
BOUNDARIES: list[tuple[str, str | None, tuple[str, ...], str]] = [
    (
        "service/",
        None,
        ("loadtest", "segmentation_client", "segmentation_gstreamer", "segmentation_webrtc"),
        "the server runs without the load tools and the clients; of clients/ it uses only the "
        "stubs generated from proto/ (segmentation.v1)",
    ),
    (
        "models/",
        None,
        (
            "service",
            "loadtest",
            "segmentation",
            "segmentation_client",
            "segmentation_gstreamer",
            "segmentation_webrtc",
        ),
        "the model files, their conversion and their checks stand below the server, which "
        "imports them",
    ),
    (
        "clients/",
        None,
        ("service", "models", "loadtest"),
        "the clients install without the server (the client distribution holds none of it)",
    ),
    (
        "clients/python/",
        None,
        ("segmentation_gstreamer", "segmentation_webrtc"),
        "the client library stands below the adapters built over it",
    ),
    ("clients/gstreamer/", None, ("segmentation_webrtc",), "one adapter never needs another"),
    ("clients/webrtc/", None, ("segmentation_gstreamer",), "one adapter never needs another"),
    (
        "loadtest/",
        "loadtest/bench/",
        ("service", "loadtest.bench"),
        "the load tool measures the server from outside, as its users do (over gRPC and its "
        "metrics), and needs none of the benchmarks",
    ),
    *[
        (f"{folder}/", None, ("tests",), "the product never needs its tests")
        for folder in CHECKED_FOLDERS
    ],
]


def _checked_files() -> list[Path]:
    return sorted(
        path
        for folder in CHECKED_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if "_pb2" not in path.name and not {"node_modules", "__pycache__"} & set(path.parts)
    )


def _crossings(imports: dict[str, set[str]]) -> list[str]:
    """Each import against `BOUNDARIES`, as "FILE imports NAME: why", by the file's path under
    the repository."""
    wrong = []
    for file, names in sorted(imports.items()):
        for under, except_under, packages, why in BOUNDARIES:
            if not file.startswith(under) or (except_under and file.startswith(except_under)):
                continue
            for name in sorted(names):
                if any(name == package or name.startswith(package + ".") for package in packages):
                    wrong.append(f"{file} imports {name}: {why}")
    return wrong


def test_no_folder_imports_across_its_boundaries() -> None:
    imports = {str(p.relative_to(ROOT)): _imported_names(p) for p in _checked_files()}
    wrong = _crossings(imports)
    assert not wrong, "imports across the folders' boundaries:\n" + "\n".join(wrong)


def test_the_boundaries_catch_each_kind_of_crossing() -> None:
    # The check must be able to fail, and name the file and the import.
    assert _crossings({"service/api/servicer.py": {"loadtest.generator"}}) == [
        "service/api/servicer.py imports loadtest.generator: the server runs without the load "
        "tools and the clients; of clients/ it uses only the stubs generated from proto/ "
        "(segmentation.v1)"
    ]
    assert not _crossings({"service/api/servicer.py": {"segmentation.v1.segmentation_pb2"}})
    assert _crossings({"models/fetch.py": {"service.config"}})
    assert _crossings({"clients/python/segmentation_client/client.py": {"service"}})
    assert _crossings({"clients/python/segmentation_client/cli.py": {"segmentation_webrtc"}})
    assert _crossings({"loadtest/cli.py": {"service.engines.tflite"}})
    assert _crossings({"loadtest/cli.py": {"loadtest.bench.service"}})
    assert not _crossings({"loadtest/bench/main.py": {"service.engines.tflite"}})
    assert _crossings({"loadtest/bench/main.py": {"tests.helpers"}})
    assert not _crossings({"loadtest/cli.py": {"loadtest.benchmarks"}})  # a name, not a prefix


def test_every_module_opens_with_its_job_and_stays_small() -> None:
    files = _checked_files()
    assert {path.relative_to(ROOT).parts[0] for path in files} == set(CHECKED_FOLDERS)
    for path in files:
        text = path.read_text()
        name = path.relative_to(ROOT)
        assert ast.get_docstring(ast.parse(text)), f"{name} opens with no docstring"
        lines = text.count("\n")
        assert lines <= MAX_LINES, f"{name} has {lines} lines, over {MAX_LINES}"
