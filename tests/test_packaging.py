"""The package says what it needs: every third-party package the code imports directly is in setup.py's
install_requires and pinned in requirements.txt; test tools are only in requirements-dev.txt."""

from __future__ import annotations

import ast
import re
import sys

from tests.support.paths import REPO_ROOT

# Import name -> distribution name, where the two differ.
DISTRIBUTIONS = {
    "PIL": "pillow",
    "open_clip": "open_clip_torch",
    "apache_beam": "apache-beam",
    "google": "apache-beam",  # google-cloud-* clients come with apache-beam[gcp]
    "requests": "apache-beam",  # the errors of Beam's own HTTP stack, looked up only when Beam brings them
    "urllib3": "apache-beam",
}
LIBRARY_AND_JOB = ("transforms", "pipeline")
NOT_SHIPPED = ("transforms/testing",)  # generators for tests and benchmarks: their imports are dev requirements


def _imported_packages() -> set[str]:
    ours = {"transforms", "pipeline"}
    found = set()
    for package in LIBRARY_AND_JOB:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if any(str(path.relative_to(REPO_ROOT)).startswith(skip) for skip in NOT_SHIPPED):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in ours and top not in sys.stdlib_module_names:
                        found.add(DISTRIBUTIONS.get(top, top).lower().replace("_", "-"))
    return found


def _names(lines: list[str]) -> set[str]:
    return {re.split(r"[=<>!~\[ ;]", line.strip())[0].lower().replace("_", "-") for line in lines if line.strip()}


def test_every_direct_import_is_a_declared_and_pinned_requirement():
    setup = ast.parse((REPO_ROOT / "setup.py").read_text())
    (requires,) = [kw.value for node in ast.walk(setup) if isinstance(node, ast.Call) for kw in node.keywords
                   if kw.arg == "install_requires"]  # fmt: skip
    declared = _names([element.value for element in requires.elts])
    pinned = _names(
        [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    )
    imported = _imported_packages()
    assert imported <= declared, f"imported but not in setup.py: {sorted(imported - declared)}"
    assert declared <= pinned, f"in setup.py but not pinned in requirements.txt: {sorted(declared - pinned)}"
