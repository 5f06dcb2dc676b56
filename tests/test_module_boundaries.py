"""Who may import whom: the stages and the inference package never import serving, and the two
serving adapters (TorchServe's handler, the kserve predictor) never import each other."""

import ast
from pathlib import Path

import imagelingo

PACKAGE = Path(imagelingo.__file__).resolve().parent


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
