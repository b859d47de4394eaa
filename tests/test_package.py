"""The package's shape: arrows point down. No import cycle among src modules, and no module imports the train
entry point (src.train is the top of the graph; src.training.cv is handed the function that trains a fold)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _imports() -> dict[str, set[str]]:
    modules = {
        ".".join(("src", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions count too
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t not in (name, "src")}
    return graph


def test_no_module_imports_the_train_entry_point():
    assert [name for name, targets in _imports().items() if "src.train" in targets] == []


def test_no_import_cycle():
    graph = _imports()

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph[start])

    assert [name for name in graph if reaches(name, name, {name})] == []
