"""The house (issue 26): sim/'s folders are its architecture, and the layering each
package's docstring states is what its imports do.

A package may import only packages below it in LAYERS (type-only imports under
TYPE_CHECKING are not dependencies). Each package says what it owns and which packages
it may import; sim/ keeps at most four top-level modules and no module over 700 lines.
"""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from tests.conftest import ROOT

SIM = ROOT / "sim"
# lowest first: each may import only those before it
LAYERS = (
    "errors", "io", "models", "profiles", "policies", "core", "config", "workload",
    "metrics", "engine", "plots", "experiments", "real", "validation", "api", "cli",
)  # fmt: skip
PACKAGES = sorted(p.name for p in SIM.iterdir() if (p / "__init__.py").exists())


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sim" and len(parts) > 1 else None


def _imports(path):
    """(line, imported sim module) of every runtime import in a file."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and re.match(r"sim(\.|$)", node.module):
            if node.module == "sim":
                yield from ((node.lineno, f"sim.{a.name}") for a in node.names)
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if re.match(r"sim(\.|$)", a.name))


def test_every_package_and_top_level_module_has_a_layer():
    modules = [p.stem for p in SIM.glob("*.py") if p.stem != "__init__"]
    assert set(PACKAGES) | set(modules) == set(LAYERS)


@pytest.mark.parametrize("path", sorted(SIM.rglob("*.py")), ids=lambda p: str(p.relative_to(SIM)))
def test_imports_follow_the_layers(path):
    own = path.relative_to(SIM).parts[0].removesuffix(".py")
    if own == "__init__":
        return  # `import sim` loads nothing: its names come on first use
    below = set(LAYERS[: LAYERS.index(own)])
    for line, module in _imports(path):
        layer = _layer(module)
        assert layer in (own, None) or layer in below, (
            f"sim/{path.relative_to(SIM)}:{line} imports {module}: {own} may import only "
            f"{', '.join(sorted(below)) or 'nothing'}"
        )


def test_the_top_level_holds_at_most_four_modules():
    modules = sorted(p.name for p in SIM.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 4, modules


@pytest.mark.parametrize("path", sorted(SIM.rglob("*.py")), ids=lambda p: str(p.relative_to(SIM)))
def test_no_module_is_over_700_lines(path):
    assert len(path.read_text().splitlines()) <= 700


@pytest.mark.parametrize("package", PACKAGES + ["profiles.estimate"])
def test_every_package_says_what_it_owns_and_what_it_may_import(package):
    doc = importlib.import_module(f"sim.{package}").__doc__ or ""
    assert len(doc.split()) >= 20, doc
    assert "May import:" in doc, doc


def test_the_design_shows_every_package_in_its_layer_order():
    design = (ROOT / "docs" / "design.md").read_text()
    for package in PACKAGES:
        assert f"  {package}/" in design, f"docs/design.md does not show sim/{package}/"
    stated = re.search(r"Layers, lowest first: (.*)\.", design)
    assert stated and [w.strip(" `") for w in stated.group(1).split(",")] == list(LAYERS)
