"""requirements.txt alone makes a consistent environment that holds everything the product imports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.production.conftest import ROOT, clean_environment

pytestmark = pytest.mark.slow

# What runs in production: the project package, the app, and the files gunicorn and manage.py load.
PRODUCT = ["OreeStats", "email_service", "gunicorn.conf.py", "manage.py"]
OWN_PACKAGES = {"OreeStats", "email_service", "tests", "google_sandbox"}


def requirement_names() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonical(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0]))
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, str]:
    """Each top-level module the product imports (at any depth in a function), with one file that does."""
    found: dict[str, str] = {}
    for entry in PRODUCT:
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN_PACKAGES:
                        found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def in_production_venv(venv: Path, code: str) -> str:
    done = subprocess.run(
        ["python", "-c", code], cwd=ROOT, env=clean_environment(venv), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pip_check_passes_and_no_test_tool_is_installed(production_venv):
    check = subprocess.run(
        ["python", "-m", "pip", "check"], env=clean_environment(production_venv), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    installed = json.loads(in_production_venv(production_venv, names))
    assert not {canonical(name) for name in installed} & {"pytest", "factory-boy", "mypy", "ruff", "playwright"}


def test_every_module_the_product_imports_comes_from_a_package_requirements_txt_names(production_venv):
    modules = imported_modules()
    providers = json.loads(
        in_production_venv(
            production_venv,
            "import importlib.metadata as m, json; print(json.dumps(m.packages_distributions()))",
        )
    )
    named = requirement_names()
    for module, where in sorted(modules.items()):
        assert module in providers, f"{module} (imported by {where}) is not installed from requirements.txt alone"
        # A namespace package (google.*) has several providers; one of them must be named.
        assert {canonical(name) for name in providers[module]} & named, (
            f"{module} (imported by {where}) comes from {providers[module]}, which requirements.txt does not name"
        )
