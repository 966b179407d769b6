"""The package's structure: arrows only point down, and no module imports itself back.

cli -> experiments (and serve, export) -> (train, eval, inference) -> (models, data) -> ops, with the small
shared homes (choices, devices, errors, files, run_files, viz, weights) at the bottom, usable by all. Read
from the code's own import statements (module level and inside functions alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pansynth"

SHARED = {"choices", "devices", "errors", "files", "run_files", "viz", "weights", "__init__"}
LAYERS = {
    "ops": 0,
    "models": 1,
    "data": 1,
    "train": 2,
    "eval": 2,
    "inference": 2,
    "experiments": 3,
    "serve": 3,
    "export": 3,
    "cli": 4,
    "bench": 4,
    "__main__": 5,
}


def _room(module: str) -> str:
    """The top-level part of a dotted module name inside pansynth."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = (
            ".".join(part for part in relative.parts if part != "__init__")
            if relative.name == "__init__"
            else ".".join(relative.parts)
        )
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pansynth"):
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.startswith("pansynth"))
        graph[name] = targets
    # keep only targets that are modules of the package
    return {name: {t for t in targets if t in graph} for name, targets in graph.items()}


def test_every_room_imports_only_rooms_below_it_or_the_shared_homes():
    wrong = []
    for module, targets in _imports().items():
        room = _room(module)
        for target in targets:
            other = _room(target)
            if other == room or other in SHARED:
                continue
            if room in SHARED:
                wrong.append(f"{module} (shared home) -> {target}")
            elif LAYERS[other] >= LAYERS[room]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_between_modules():
    graph = _imports()
    for module in graph:  # a package imports its own submodules in __init__: not a cycle of ideas
        graph[module] = {t for t in graph[module] if not (module + ".").startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for target in graph[node]:
            if target.startswith(node + "."):
                continue  # a package's __init__ re-exporting its own modules
            if state.get(target) == 1:
                cycle.extend(stack[stack.index(target) :] + [target] if target in stack else [node, target])
                return True
            if state.get(target) is None and visit(target, [*stack, target]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if state.get(module) is None and visit(module, [module]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_command_line_imports_its_groups_explicitly():
    source = (PACKAGE / "cli" / "main.py").read_text(encoding="utf-8")
    assert "importlib" not in source and "__import__" not in source
    assert "from pansynth.cli import" in source


def test_no_import_hides_behind_a_string():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                assert name not in ("import_module", "__import__"), f"{path.relative_to(PACKAGE)}: {name}"
