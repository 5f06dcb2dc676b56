"""Who may import whom: each layer of the package imports only its own layer and those below it,
no module imports itself back through others, the stages and the inference package never import
serving, and the two serving adapters (TorchServe's handler, the kserve predictor) never import
each other. Every import counts, the ones inside functions too."""

import ast
from pathlib import Path

import imagelingo

PACKAGE = Path(imagelingo.__file__).resolve().parent
# Every module's layer, lowest first: a module may import modules of its own layer and of the
# layers listed before it, never of one listed after. Names are relative to the package; "pkg.*"
# is a package and its modules, and a module listed by its own name is in that name's layer.
LAYERS = {
    # What every layer uses. ImageLingoError's home is inference/errors.py, so that the MAR's copy
    # of the inference package raises the class the CLI prints; errors.py re-exports it.
    "base": "__init__ errors inference.errors artifacts config storage tracking resume",
    "data": "data.* ingest",  # caption formats, datasets; stage 1
    "inference": "inference.* devices",  # captioning with a trained model, torch alone
    "features": "vocab encoders features captioning",  # stages 2, 3; a model dir + its encoder
    "training": "train scst checkpoint loss distributed metrics cider",  # stage 4, its scores
    "evaluation": "evaluate report model_logging mlflow_model registry release",  # stage 5
    "serving": "serving.*",
    "cluster": "cluster.* deploy trainjob",
    "pipeline": "orchestration",
    "cli": "cli",
}


def imported_modules(path: Path) -> set[str]:
    """Every imagelingo module a file imports, relative imports resolved."""
    package = ["imagelingo", *path.relative_to(PACKAGE).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("imagelingo")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(module: str) -> set[str]:
    """The package's modules that `module` imports (a name imported from a module is not one)."""
    return {name for name in imported_modules(MODULES[module]) if name in MODULES} - {module}


def short_name(module: str) -> str:
    return module.removeprefix("imagelingo").removeprefix(".") or "__init__"


def entry_names(entry: str, short: str) -> bool:
    """Whether LAYERS entry `entry` ("train", "data.*") names the module `short`."""
    return entry == short or entry.endswith(".*") and f"{short}.".startswith(entry[:-1])


def layer_of(module: str) -> int:
    """The rank in LAYERS of `module`'s layer: the one naming it, else the one of its package."""
    short = short_name(module)
    entries = [(name, rank) for rank, names in enumerate(LAYERS.values()) for name in names.split()]
    own = [rank for name, rank in entries if name == short]
    package = [rank for name, rank in entries if entry_names(name, short)]
    assert own or package, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return (own or package)[0]


def test_every_module_has_a_layer_and_every_entry_names_a_module():
    for module in MODULES:
        layer_of(module)
    shorts = [short_name(m) for m in MODULES]
    for layer, names in LAYERS.items():
        for name in names.split():
            assert any(entry_names(name, s) for s in shorts), (
                f"LAYERS[{layer!r}] names {name}, which is no module of the package"
            )


def test_each_layer_imports_only_its_own_layer_and_lower_ones():
    names = list(LAYERS)
    upward = [
        f"{module} ({names[layer_of(module)]}) imports {imported} ({names[layer_of(imported)]})"
        for module in sorted(MODULES)
        for imported in sorted(imports_of(module))
        if layer_of(imported) > layer_of(module)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(imports_of(module)):
            if found := cycle_from(imported, [*path, module]):
                return found
        done.add(module)
        return None

    for module in sorted(MODULES):
        cycle = cycle_from(module, [])
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_stage_and_nothing_in_inference_imports_serving():
    # cli.py is the one adapter outside serving/: it starts servers
    core = [p for p in PACKAGE.rglob("*.py") if "serving" not in p.parts and p.name != "cli.py"]
    assert PACKAGE / "inference" / "captioner.py" in core
    for path in core:
        serving = {m for m in imported_modules(path) if m.startswith("imagelingo.serving")}
        assert not serving, f"{path.relative_to(PACKAGE)} imports {sorted(serving)}"


def test_the_inference_package_imports_only_itself():
    for path in (PACKAGE / "inference").glob("*.py"):
        outside = {m for m in imported_modules(path) if not m.startswith("imagelingo.inference")}
        assert not outside, f"{path.relative_to(PACKAGE)} imports {sorted(outside)}"


def test_the_serving_adapters_do_not_import_each_other():
    adapters = {"handler": "kserve_predictor", "kserve_predictor": "handler"}
    for adapter, other in adapters.items():
        imported = imported_modules(PACKAGE / "serving" / f"{adapter}.py")
        assert f"imagelingo.serving.{other}" not in imported, f"{adapter} imports {other}"
        assert "imagelingo.serving.torchserve" not in imported, f"{adapter} imports torchserve"
