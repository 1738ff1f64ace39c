"""The package's layout rules (ARCHITECTURE.md), read from the source with ``ast``.

Every import statement counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sam2ui"
FRONT_ENDS = ("sam2ui.app", "sam2ui.widgets", "sam2ui.cli", "sam2ui.hf")
UI_LIBRARIES = ("gradio", "gradio_client", "ipywidgets", "anywidget", "spaces")
# Engine layers, bottom first: a module may import its own layer or lower ones only.
CORE_LAYERS = [
    {"compat"},
    {"masks", "transforms", "modeling", "scratch"},
    {"render", "loading"},
    {"exports", "image", "video"},
    {"annotate"},
    {"serving"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Modules (and ``module.name`` candidates) that ``path`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:  # `from . import x` imports x, not (only) the package
                found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def internal_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's ``__init__`` counts as itself)."""
    mods = sources()
    return {
        name: {m for m in imports_of(name, path) if m in mods and m != name}
        for name, path in mods.items()
    }


def test_no_import_circles() -> None:
    graph = internal_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # A package's __init__ that re-exports from its own modules is not a circle: the door
    # (sam2ui.core) and sam2ui itself are lazy and import nothing at run time.
    assert circles == []


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_import_only_the_core_door(front_end: str) -> None:
    offending = {
        (name, target)
        for name, path in sources().items()
        if name == front_end or name.startswith(front_end + ".")
        for target in imports_of(name, path)
        if target.startswith("sam2ui.core.")
        and target.rpartition(".")[0] != "sam2ui.core"  # `from sam2ui.core import X` is fine
    }
    assert offending == set()


def test_core_never_imports_the_front_ends_or_ui_libraries() -> None:
    offending = {
        (name, target)
        for name, path in sources().items()
        if name.startswith("sam2ui.core")
        for target in imports_of(name, path)
        if target.split(".")[0] in UI_LIBRARIES or target.startswith(FRONT_ENDS)
    }
    assert offending == set()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["sam2ui", "core"]:
        return None
    return next((i for i, layer in enumerate(CORE_LAYERS) if parts[2] in layer), None)


def test_core_imports_flow_down() -> None:
    upward = {
        (name, target)
        for name, targets in internal_graph().items()
        for target in targets
        if (mine := layer_of(name)) is not None
        and (theirs := layer_of(target)) is not None
        and theirs > mine
    }
    assert upward == set()


def test_every_core_part_has_a_layer() -> None:
    core = PACKAGE / "core"
    parts = {p.stem for p in core.glob("*.py") if p.name != "__init__.py"}
    parts |= {p.name for p in core.iterdir() if (p / "__init__.py").exists()}
    assert parts == set().union(*CORE_LAYERS)


def test_small_files_and_few_flat_core_modules() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}
    flat = sorted(p.name for p in (PACKAGE / "core").glob("*.py"))
    assert len(flat) <= 6, flat
