"""The package's architecture, checked from its source: no import cycles inside ``weightspace``, no
module importing a private name of another, ``model_zoo`` depending on ``weightspace`` and not the
reverse (but for the zoo-facing entry points), Hydra only in the CLI, and a light ``import weightspace``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("weightspace", "model_zoo")

#: modules of ``weightspace`` that may import ``model_zoo`` (lazily): they open zoo directories or
#: train zoos, so the zoo store is their input. Everything else depends on ``model_zoo`` only through
#: duck-typed zoo objects.
ZOO_FACING = ("weightspace.cli.", "weightspace.tasks.", "weightspace.predict.data", "weightspace.nowcast.data",
              "weightspace.diffusion.data")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_pkg = MODULES.get(module, Path()).name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every import statement, anywhere in the file."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:  # `from pkg import submodule`
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, a.name, node.lineno))
    return out


def _deprecated_shim(module: str) -> bool:
    """Old import paths kept one release: they only re-export and warn."""
    return module.startswith("weightspace.tasks")


def test_no_import_cycles_inside_weightspace():
    g = nx.DiGraph()
    for m in MODULES:
        if not m.startswith("weightspace") or _deprecated_shim(m):
            continue
        g.add_node(m)
        for target, _, _ in _imports(m):
            if target in MODULES and target.startswith("weightspace") and target != m and not _deprecated_shim(target):
                # importing a package runs its __init__, which is part of the cycle only if it imports back
                g.add_edge(m, target)
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1 and not _package_parent_cycle(c)]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def _package_parent_cycle(cycle: list[str]) -> bool:
    """``pkg/__init__`` re-exporting ``pkg.mod`` while ``pkg.mod`` imports a sibling through ``pkg``
    is Python's ordinary package pattern, not a design cycle: allowed only when every edge goes
    between a package and its own submodules."""
    return all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:] + cycle[:1]))


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for m in MODULES:
        if _deprecated_shim(m):
            continue
        for target, name, line in _imports(m):
            if name and name.startswith("_") and not name.startswith("__") and target in MODULES and target != m:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {name} from {target}")
            if target in MODULES and target.split(".")[-1].startswith("_") and target.rsplit(".", 1)[0] != m.rsplit(".", 1)[0] \
                    and not target.split(".")[-1].startswith("__"):
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports the private module {target}")
    assert not bad, "\n".join(bad)


def test_test_sensitivity_private_import_is_detected(tmp_path):
    """The checker above sees function-local and relative imports (a check that cannot fail is no check)."""
    src = "def f():\n    from .statnn import _hidden\n"
    tree = ast.parse(src)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _resolve("weightspace.nn.gmn", node) == "weightspace.nn.statnn"
    assert node.names[0].name.startswith("_")


def test_model_zoo_is_imported_only_by_zoo_facing_modules():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line}" for m in MODULES if m.startswith("weightspace")
           and not m.startswith(ZOO_FACING) for target, _, line in _imports(m) if target.split(".")[0] == "model_zoo"]
    assert not bad, "weightspace modules importing model_zoo: " + ", ".join(bad)


def test_hydra_only_in_the_cli():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line}" for m in MODULES if m.startswith("weightspace")
           and not m.startswith("weightspace.cli") for target, _, line in _imports(m)
           if target.split(".")[0] in ("hydra", "omegaconf")]
    assert not bad, "Hydra imported outside weightspace/cli: " + ", ".join(bad)


@pytest.mark.parametrize("capability", ["predict", "nowcast", "hyper", "diffusion"])
def test_each_capability_is_a_subpackage_exporting_its_api(capability):
    init = ROOT / "weightspace" / capability / "__init__.py"
    assert init.is_file(), f"weightspace/{capability}/ is not a package"
    tree = ast.parse(init.read_text())
    names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    assert "__all__" in names, f"weightspace/{capability}/__init__.py defines no __all__"


def test_import_weightspace_is_light():
    code = ("import sys, weightspace; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('weightspace', 'model_zoo', 'hydra')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = eval(out)  # a list literal printed by the child
    heavy = [m for m in loaded if m.split(".")[:2][-1] in ("predict", "nowcast", "hyper", "diffusion", "cli", "tasks")
             or m.startswith(("model_zoo", "hydra"))]
    assert not heavy, f"`import weightspace` loads {heavy}"
