"""The layering rules of the house, read from the imports themselves (docs/design.md, Layout):

- the library (`transforms`) never imports the job (`pipeline`), the benchmarks or the tests;
- the library's core (`transforms/model`, `transforms/inputs`, its top-level modules) never imports Beam at
  module level: only `transforms/beam` and the job do;
- the command line (`pipeline/cli`) imports neither torch nor the model nor Beam at module level (but for
  `options`, the Beam options class, which `command.parse` imports once the job's own flags have parsed);
- the report uses the shared CLI kit, not the job's own flag modules;
- the benchmarks never import the tests;
- no module-level import circle among the project's modules.

Each rule is also shown to fail on a small tree that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from tests.support.paths import REPO_ROOT

PACKAGES = ("transforms", "pipeline", "bench", "tests", "examples", "dataflow")


class Import(NamedTuple):
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (a module, or a module's name)
    top_level: bool  # at module level, not inside a function


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> Iterator[Import]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            top = {id(node) for node in tree.body}
            top |= {id(inner) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for inner in ast.walk(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(module, alias.name, id(node) in top)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    for alias in node.names:
                        yield Import(module, f"{node.module}.{alias.name}", id(node) in top)


def _under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(root: Path) -> list[str]:
    found = []
    core = ("transforms.model", "transforms.inputs", "transforms.settings", "transforms.reasons", "transforms.outputs")
    for item in imports(root):
        where = f"{item.module} imports {item.target}"
        if _under(item.module, "transforms") and _under(item.target, "pipeline", "bench", "tests"):
            found.append(f"the library imports the job, a benchmark or a test: {where}")
        if _under(item.module, *core) and item.top_level and _under(item.target, "apache_beam"):
            found.append(f"the library's core imports Beam at module level: {where}")
        if _under(item.module, "pipeline.cli") and item.top_level and item.module != "pipeline.cli.options":
            heavy = ("torch", "open_clip", "transforms.model", "transforms.beam", "apache_beam", "pipeline.job")
            if _under(item.target, *heavy) or item.target == "pipeline.cli.options":
                found.append(f"the command line imports what --help must not wait for: {where}")
        job_flags = ("pipeline.cli.declarations", "pipeline.cli.command", "pipeline.cli.options", "pipeline.cli.checks")
        if _under(item.module, "pipeline.report") and _under(item.target, *job_flags, "pipeline.job"):
            found.append(f"the report uses the job's own flag modules: {where}")
        if _under(item.module, "bench") and _under(item.target, "tests"):
            found.append(f"a benchmark imports the tests: {where}")
    found += [f"import circle: {' -> '.join(cycle)}" for cycle in circles(root)]
    return found


def circles(root: Path) -> list[list[str]]:
    """Module-level import circles among the project's modules (`from package import module` included)."""
    modules = {module_name(root, p) for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for item in imports(root):
        if not item.top_level:
            continue
        target = item.target if item.target in modules else item.target.rpartition(".")[0]
        if target in modules and target != item.module and not _is_parent(target, item.module):
            graph[item.module].add(target)
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def _is_parent(package: str, module: str) -> bool:
    """A module's own package: importing it runs its `__init__`, which imports nothing of the module here."""
    return module.startswith(package + ".")


def test_the_project_keeps_its_layers():
    assert violations(REPO_ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "files, rule",
    [
        ({"transforms/x.py": "from pipeline import job\n"}, "the library imports the job"),
        ({"transforms/model/x.py": "import apache_beam as beam\n"}, "core imports Beam at module level"),
        ({"pipeline/cli/x.py": "import torch\n"}, "the command line imports what --help must not wait for"),
        ({"pipeline/report/x.py": "from pipeline.cli.declarations import GROUPS\n"}, "the job's own flag modules"),
        ({"bench/x.py": "from tests.support import paths\n"}, "a benchmark imports the tests"),
        ({"pipeline/a.py": "from pipeline import b\n", "pipeline/b.py": "import pipeline.a\n"}, "import circle"),
    ],
)
def test_each_rule_fails_when_broken(tmp_path, files, rule):
    found = violations(_tree(tmp_path, files))
    assert any(rule in line for line in found), found


def test_imports_inside_functions_are_allowed_where_module_level_ones_are_not(tmp_path):
    lazy = "def read():\n    import apache_beam\n"
    assert violations(_tree(tmp_path, {"transforms/inputs/x.py": lazy})) == []


@pytest.mark.parametrize("package", ["pipeline", "transforms"])
def test_no_exported_name_is_shadowed_by_a_submodule(package):
    """`from pipeline import preflight` gave the module, not the function, once `pipeline.preflight` had been
    imported: a package's lazily exported name must not be one of its submodules' names."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module.__all__) & submodules
