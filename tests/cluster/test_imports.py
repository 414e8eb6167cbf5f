"""The package layering, read from the source with ast (nothing is imported): only cluster/ imports
Ray, and there only the Ray adapters; imports flow cluster -> sashimi, data_prep and never back; inside
cluster/ each side imports only the sides below it (shared modules < tasks < checkpoint < train <
driver < tools); no import cycle anywhere; cluster/ imports at module top."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sashimi", "data_prep", "cluster")
# What each package may import from the project (besides itself).
ALLOWED = {"sashimi": set(), "data_prep": set(), "cluster": {"sashimi", "data_prep"}}
# cluster/'s sides, lowest first: each may import the ones before it (and itself). "cluster" is the shared
# top-level modules (job schema, run dir, seeds, collectives, logger, audio out).
SIDES = ("cluster", "cluster.tasks", "cluster.checkpoint", "cluster.train", "cluster.driver", "cluster.tools")
# The only modules that may import Ray: the driver's launch and connection, the worker adapter, sashimi-eval's
# Ray tasks. The Trainer, the checkpoint manager and the tasks stay Ray-free.
RAY_MODULES = {"cluster.driver.launch", "cluster.driver.connect", "cluster.train.ray_worker", "cluster.tools.evaluate"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, ast.stmt]]:
    """(imported module, node) for every import statement anywhere in the file; `from X import y`
    counts as importing X.y when that is a module of the project, else X; relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub if sub in MODULES else target, node))
    return out


def _project_edges() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        deps = set()
        for target, _ in _imports(name, path):
            while target and target not in MODULES:  # a name inside a module: the module itself
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        edges[name] = deps
    return edges


def _top(name: str) -> str:
    return name.split(".")[0]


def test_only_the_ray_adapters_import_ray():
    bad = [f"{path.relative_to(ROOT)}:{node.lineno} imports {target}"
           for name, path in MODULES.items() if name not in RAY_MODULES
           for target, node in _imports(name, path) if target == "ray" or target.startswith("ray.")]
    assert not bad, "Ray outside the Ray adapters:\n" + "\n".join(bad)


def _side(name: str) -> str:
    """A cluster module's side: its sub-package, or "cluster" for the shared top-level modules."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and f"{name}.__init__" in _PACKAGE_INITS) \
        else "cluster"


_PACKAGE_INITS = {".".join(f.relative_to(ROOT).with_suffix("").parts) for f in (ROOT / "cluster").rglob("__init__.py")}


def test_every_cluster_module_is_on_a_known_side():
    unknown = sorted(m for m in MODULES if _top(m) == "cluster" and _side(m) not in SIDES)
    assert not unknown, f"add these sub-packages to SIDES (in their place in the layering): {unknown}"


def test_cluster_sides_import_only_the_sides_below():
    bad = [f"{name} ({_side(name)}) imports {dep} ({_side(dep)})" for name, deps in _project_edges().items()
           if _top(name) == "cluster" for dep in deps
           if _top(dep) == "cluster" and SIDES.index(_side(dep)) > SIDES.index(_side(name))]
    assert not bad, "\n".join(bad)


def test_imports_flow_from_cluster_to_sashimi_and_data_prep_only():
    bad = [f"{name} imports {dep}" for name, deps in _project_edges().items() for dep in deps
           if _top(dep) != _top(name) and _top(dep) not in ALLOWED[_top(name)]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    edges = _project_edges()
    state, stack, cycles = {}, [], []

    def visit(m):  # depth-first search; a back edge to a module on the stack closes a cycle
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


OPTIONAL = {"pykeops"}  # may be imported where used: a missing or unbuildable one must not break import


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _top(m) == "cluster"))
def test_cluster_imports_at_module_top(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    nested = [node for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))]
    bad = [f"line {n.lineno}" for n in nested
           if not any((getattr(n, "module", None) or a.name).split(".")[0] in OPTIONAL for a in n.names)]
    assert not bad, f"{name}: imports inside functions at {', '.join(bad)}"


def test_the_checker_sees_cycles_and_ray(tmp_path, monkeypatch):
    """The walker is not vacuous: it resolves relative imports and reports a planted cycle and Ray import."""
    pkg = tmp_path / "sashimi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n    import ray.train\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "ROOT", tmp_path)
    monkeypatch.setattr(here, "MODULES", {"sashimi": pkg / "__init__.py", "sashimi.a": pkg / "a.py",
                                          "sashimi.b": pkg / "b.py"})
    assert _project_edges() == {"sashimi": set(), "sashimi.a": {"sashimi.b"}, "sashimi.b": {"sashimi.a"}}
    with pytest.raises(AssertionError, match="sashimi.a -> sashimi.b -> sashimi.a"):
        test_no_import_cycle()
    with pytest.raises(AssertionError, match="imports ray.train"):
        test_only_the_ray_adapters_import_ray()


def test_the_side_checker_sees_an_upward_import(monkeypatch):
    """The side rule is not vacuous: the trainer importing the driver is reported."""
    here = sys.modules[__name__]
    edges = _project_edges()
    edges["cluster.train.trainer"] = edges["cluster.train.trainer"] | {"cluster.driver.prepare"}
    monkeypatch.setattr(here, "_project_edges", lambda: edges)
    with pytest.raises(AssertionError, match=r"cluster.train.trainer \(cluster.train\) imports cluster.driver.prepare"):
        test_cluster_sides_import_only_the_sides_below()
