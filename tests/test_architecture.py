"""The layering, read from the code's own imports.

policies/ is the language both sides share, so it imports neither side; the agent
installs without the server's packages, so it never imports server code; and no
module imports, directly or through others, a module that imports it back — a
cycle is how "types in their own module" decays, and every import counts, those
made inside a function or under TYPE_CHECKING too. The dashboard and the admin API
are two doors onto the store: they share code through modules of their own, never
one through the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policies", "agent", "server")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every project module `module` imports, resolved to the module (not the name in it)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}"
                else:
                    yield from _known(base)


def _known(name: str) -> Iterator[str]:
    # `import a.b.c` binds a name that needs a.b.c; the nearest module we have is the edge.
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    if name:
        yield name


GRAPH = {module: sorted(set(_imported(module, path)) - {module})
         for module, path in MODULES.items()}


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_was_read() -> None:
    # Guards the test itself: a resolver that found nothing would pass every rule below.
    assert "policies.engine" in GRAPH["agent.daemon"] or any(
        target.startswith("policies.") for target in GRAPH["agent.cli"])
    assert sum(len(targets) for targets in GRAPH.values()) > 200


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("policies", ("agent", "server")),
    ("agent", ("server",)),
])
def test_layers_import_only_downwards(importer: str, forbidden: tuple[str, ...]) -> None:
    wrong = [f"{module} imports {target}"
             for module, targets in GRAPH.items() if _layer(module) == importer
             for target in targets if _layer(target) in forbidden]
    assert not wrong, "\n".join(wrong)


def test_the_dashboard_does_not_go_through_the_admin_api() -> None:
    wrong = [f"{module} imports {target}"
             for module, targets in GRAPH.items() if module.startswith("server.dashboard")
             for target in targets if target.startswith("server.api.admin")]
    assert not wrong, "\n".join(wrong)


def test_the_wire_schemas_know_nothing_of_the_database() -> None:
    # The API's models (and the list filters) are what the CLI and the API client load:
    # the store depends on them, never the other way round.
    wrong = [f"{module} imports {target}"
             for module, targets in GRAPH.items()
             if module.startswith(("server.schemas", "server.api_client"))
             for target in targets
             if target.startswith(("server.store", "server.models", "server.db"))]
    assert not wrong, "\n".join(wrong)


def test_the_cli_starts_without_the_database_layer() -> None:
    # `warden` answers --help, talks to the API and validates policies without SQLAlchemy,
    # FastAPI or the PDF library: the commands that need them import them when they run
    # (it started in 1.8 s of CPU with them, 0.6 s without).
    probe = ("import sys, server.cli; print(sorted(name for name in "
             "('sqlalchemy', 'fastapi', 'fpdf', 'alembic') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert not cycles, "modules that import each other (directly or through others):\n" + \
        "\n".join(" <-> ".join(component) for component in cycles)
