"""The package's layers, as its folders show them: each imports only the layers below it.

``core`` (events, rules, engine) imports no other layer; ``config`` only ``core``; ``offline``, ``live``
and ``outputs`` sit on those two; ``tools`` (the embedded test broker, replay, demo, generate) is
imported only by the CLI and the tests; ``cli`` is the top. No module imports itself back through
others (no cycles), and no module is over ~500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streams"

ALLOWED = {
    "core": {"core"},
    "config": {"core", "config"},
    "inputs": {"core", "config", "inputs"},
    "outputs": {"core", "config", "outputs"},
    "offline": {"core", "config", "inputs", "outputs", "offline"},
    "live": {"core", "config", "inputs", "outputs", "live"},
    "tools": {"core", "config", "inputs", "outputs", "offline", "live", "tools"},
    "cli": {"core", "config", "inputs", "outputs", "offline", "live", "tools", "cli"},
}
MAX_LINES = 520


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every ``streams.*`` module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("streams")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streams"):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = _modules()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_a_module_imports_only_the_layers_below_it(module: str) -> None:
    layer = _layer(module)
    assert layer is not None
    wrong = sorted(
        f"{target} ({_layer(target)})"
        for target in _imports(MODULES[module])
        if target in MODULES and _layer(target) not in ALLOWED[layer] and _layer(target) is not None
    )
    assert not wrong, f"{module} ({layer}) imports {', '.join(wrong)}"


def test_there_are_no_import_cycles() -> None:
    graph = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of layers
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".") and not t.startswith(m + ".")}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_500_lines(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"
