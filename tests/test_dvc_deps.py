"""dvc.yaml's dependencies cannot drift: each stage depends on every project module its command imports
(followed transitively, lazy imports included), and on nothing of the project it does not import.

A folder dependency (imbsam/kernels: its C sources, loaded by path, come with it) must hold only files the
stage uses; a dependency on the whole of imbsam/ would re-train every run whenever a benchmark or the report
changed.
"""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(name):
    """The project file of a dotted module name, or None for a module from elsewhere."""
    if name == "_common":
        return REPO / "stages" / "_common.py"
    if name.split(".")[0] != "imbsam":
        return None
    path = REPO.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _with_packages(name):
    """A module and the packages above it, whose __init__ runs first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from imbsam import data` imports a module; `from imbsam.data.download import fetch` a name
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (file := _module_file(f"{node.module}.{alias.name}")) and file.is_file())
    return {package for name in names for package in _with_packages(name)}


def closure(script):
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            file = _module_file(name)
            if file is not None and file.is_file():
                todo.append(file)
    return seen


def _script(stage):
    return REPO / stage["cmd"].split()[1]


def _project_deps(stage):
    deps = [REPO / dep for dep in stage.get("deps", [])]
    return [dep for dep in deps if dep.is_relative_to(REPO / "imbsam") or dep.is_relative_to(REPO / "stages")]


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_depends_on_every_module_it_imports(name):
    stage = STAGES[name]
    deps = _project_deps(stage)
    missing = [str(file.relative_to(REPO)) for file in sorted(closure(_script(stage)))
               if not any(file == dep or file.is_relative_to(dep) for dep in deps)]
    assert not missing, f"dvc.yaml stage {name} imports but does not depend on {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_depends_on_nothing_of_the_project_it_does_not_use(name):
    stage = STAGES[name]
    used = closure(_script(stage))
    for dep in _project_deps(stage):
        files = [dep] if dep.is_file() else [f for f in dep.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        modules = [f for f in files if f.suffix == ".py"]
        assert modules, f"{name}: {dep} holds no module"
        unused = [str(f.relative_to(REPO)) for f in modules if f not in used]
        assert not unused, f"dvc.yaml stage {name} depends on {unused}, which it does not import"


def test_the_closure_follows_lazy_and_package_imports():
    files = {str(f.relative_to(REPO)) for f in closure(REPO / "stages" / "train.py")}
    # imported inside main(), through a package's __init__, and by a module the stage imports
    assert {"imbsam/train.py", "imbsam/kernels/__init__.py", "imbsam/kernels/onednn.py", "imbsam/optim.py"} <= files
    assert "imbsam/report.py" not in files and "imbsam/bench/step.py" not in files
