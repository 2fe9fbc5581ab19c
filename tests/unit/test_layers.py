"""The architecture as a rule: packages only import downward, and no two modules import each
other, directly, inside a function or through a module name in a string."""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import ROOT

# Bottom to top. A package may import those below it; model_deploy may use model_build (the
# deploy half builds the batch definition), never the other way round.
LAYERS = ("mlops_core", "model_build", "model_deploy", "mlops_local", "mlops")
PROJECT = re.compile(rf"^({'|'.join(LAYERS)})(\.\w+)*$")
# What the SageMaker containers run: only the standard library, the container's packages and
# the data contract shipped beside them.
CONTAINER_CODE = ("model_build.scripts", "model_deploy.monitoring")
CONTRACT = "model_build.scripts.contract"


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = ast.parse(path.read_text(), filename=str(path))
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module a dotted name refers to (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _package_of(module: str) -> str:
    is_package = any(m.startswith(module + ".") for m in MODULES)
    return module if is_package else module.rpartition(".")[0]


def imports(module: str) -> set[str]:
    """Every project module `module` imports anywhere in its code, or names in a string."""
    found = set()
    for node in ast.walk(MODULES[module]):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module).split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A string that is a module's name (`python -m ...`, "module:function"); prose
            # and file names that merely mention one are not imports.
            name = node.value.strip().split(":")[0]
            names = [name] if "." in name and name in MODULES else []
        for name in names:
            target = _resolve(name.split(":")[0]) if PROJECT.match(name.split(":")[0]) else None
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} imports {upward}, which sit above it in {LAYERS}"


def test_the_core_imports_nothing_else_of_the_project():
    leaks = {m: sorted(t for t in GRAPH[m] if not t.startswith("mlops_core"))
             for m in MODULES if m.startswith("mlops_core")}
    assert not {m: t for m, t in leaks.items() if t}


def test_container_code_imports_only_the_data_contract():
    for module, targets in GRAPH.items():
        if module.startswith(CONTAINER_CODE) and module != CONTRACT:
            allowed = {CONTRACT, *(m for m in MODULES if m.startswith("model_deploy.monitoring"))}
            assert targets <= allowed, f"{module} imports {sorted(targets - allowed)}"


def test_no_import_cycle_between_any_modules():
    """Depth-first search for a cycle; a package's __init__ counts as its own module."""
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_no_test_imports_another_test_module():
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
                assert node.module == "tests.helpers", f"{path.relative_to(ROOT)} imports " \
                    f"{node.module}; shared test code lives in tests/helpers.py"


def test_the_rule_sees_a_violation():
    """The checks above would catch an upward import and a cycle through a string."""
    sample = ast.parse("from mlops_local.store import LocalStore\nKIND = 'mlops_core.config'\n")
    MODULES["mlops_core.sample"] = sample
    try:
        assert imports("mlops_core.sample") == {"mlops_local.store", "mlops_core.config"}
    finally:
        del MODULES["mlops_core.sample"]
