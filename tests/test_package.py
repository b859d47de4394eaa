"""The package's shape: arrows point down. No import cycle among src modules, and no module imports the train
entry point but the sweep, whose trials are training commands (src.train is the top of the graph below src.sweep;
src.training.cv is handed the function that trains a fold)."""

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


def test_no_module_imports_the_train_entry_point_but_the_sweep():
    assert [name for name, targets in _imports().items() if "src.train" in targets] == ["src.sweep"]
    assert [name for name, targets in _imports().items() if "src.sweep" in targets] == []


def test_no_import_cycle():
    graph = _imports()

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph[start])

    assert [name for name in graph if reaches(name, name, {name})] == []


ENTRY_POINTS = {"src.train", "src.predict", "src.ensemble", "src.lr_find", "src.soup", "src.runs", "src.sweep"}
CARD = {"src.model", "src.activations", "src.augmentations", "src.mixup", "src.loaddata", "src.losses"}
SPINE = {"src.config", "src.cli", "src.targets", "src.metrics"}
PACKAGES = {"src.utils", "src.data", "src.layers", "src.training", "src.inference", "src.tracking", "src.kaggle",
            "src.tuning", "src.tools"}


def _package(module: str) -> str:
    """The subpackage a module belongs to, or the module itself for a top-level one."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports_into(sources: set[str], targets: set[str]) -> list[tuple[str, str]]:
    """(importer, imported) pairs from a module of the packages ``sources`` into one of ``targets``."""
    return sorted(
        (name, target)
        for name, imported in _imports().items()
        if _package(name) in sources
        for target in imported
        if _package(target) in targets
    )


def test_src_holds_only_entry_points_card_modules_the_spine_and_subpackages():
    top = {f"src.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    folders = {f"src.{p.name}" for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert top <= ENTRY_POINTS | CARD | SPINE, top - (ENTRY_POINTS | CARD | SPINE)
    assert folders <= PACKAGES | SPINE, folders - (PACKAGES | SPINE)


def test_utils_import_nothing_of_the_package():
    assert _imports_into({"src.utils"}, {_package(m) for m in _imports()} - {"src.utils"}) == []


def test_config_targets_and_metrics_import_only_each_other_and_utils():
    allowed = {"src.utils", "src.config", "src.targets", "src.metrics"}
    others = {_package(m) for m in _imports()} - allowed
    assert _imports_into({"src.config", "src.targets", "src.metrics"}, others) == []


def test_records_and_predictions_never_import_data_layers_or_training():
    """The run folder, reports and prediction files sit below the data, the model and the training that use them."""
    lower = {"src.tracking", "src.inference"}
    assert _imports_into(lower, {"src.data", "src.layers", "src.training", "src.model", "src.loaddata"}) == []


def test_data_and_layers_never_import_training():
    assert _imports_into({"src.data", "src.layers"}, {"src.training"}) == []


def test_no_library_module_imports_an_entry_point_or_the_command_line():
    library = PACKAGES - {"src.kaggle", "src.tools"} | CARD | {"src.config", "src.targets", "src.metrics"}
    assert _imports_into(library, ENTRY_POINTS | {"src.cli", "src.kaggle", "src.tools"}) == []


ROOT = SRC.parent


def _documented_paths() -> set[str]:
    """The paths the module table of docs/architecture.md names: ``src/x.py`` rows, and file names under a
    ``**`src/<folder>/`**`` row, which belong to that folder."""
    folder, paths = "", set()
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        if line.startswith("#"):  # a new section: paths are whole again
            folder = ""
        if not line.startswith("| "):
            continue
        cell = line.split("|")[1].strip()
        if cell.startswith("**"):
            folder = cell.strip("*`") if cell.startswith("**`src/") else ""
            paths.add(folder)
            continue
        for name in cell.replace("`", "").split(", "):
            if name.endswith((".py", "/")):
                paths.add(name if "/" in name.rstrip("/") else folder + name)
    return paths


def test_the_architecture_doc_names_every_module_and_only_modules_that_exist():
    documented = _documented_paths()
    modules = {str(p.relative_to(ROOT)) for p in SRC.glob("*.py") if p.stem != "__init__"}
    folders = {f"src/{p.name}/" for p in SRC.iterdir() if (p / "__init__.py").exists()}
    concerns = {str(p.relative_to(ROOT)) for p in SRC.glob("*/*.py") if p.stem != "__init__"}
    concerns = {p for p in concerns if not p.startswith(("src/config/", "src/kaggle/", "src/tools/"))}  # one row each
    assert modules | folders | concerns <= documented, sorted((modules | folders | concerns) - documented)
    assert [p for p in documented if p.startswith("src/") and not (ROOT / p).exists()] == []


def test_the_readme_layout_names_every_folder_of_src():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    folders = [f"`src/{p.name}/`" for p in SRC.iterdir() if (p / "__init__.py").exists() and p.name != "config"]
    assert [f for f in folders if f not in layout] == []
