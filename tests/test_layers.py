"""Dependency arrows point one way (core <- models <- generate / quality <- commands), checked statically with
``ast``: every import statement counts, also the ones inside functions (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flexiffusion", "bench", "baselines", "reports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from x import y`` counts ``x.y`` when that is a module)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            while target and target not in modules:  # "pkg.mod.attr" -> "pkg.mod"
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                deps.add(target)
        graph[name] = deps
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_lazy_imports_and_cycles():
    assert "bench.embedded.loader" in GRAPH["bench.models.loading"]  # imported inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules():
    assert _cycles(GRAPH) == []


# The layer order, bottom-up: a module may import only modules of its own layer or a lower one (the longest prefix
# names a module's layer).  docs/architecture.md describes the same order (tests/test_architecture_doc.py).
LAYERS = [
    ("core", ("flexiffusion",)),
    ("storage", ("bench.results", "bench.store", "bench.cache", "bench.embedded")),
    ("models", ("bench.models", "bench.presets")),
    ("generate, quality, cost", ("bench.generate", "bench.quality", "bench.cost")),
    ("methods", ("baselines",)),
    ("evaluation", ("bench.evaluation",)),
    ("search", ("bench.search",)),
    ("rows", ("bench.rows",)),
    ("experiments", ("bench.experiments",)),
    ("reports", ("reports", "bench.tracking", "bench.track", "bench.history")),
    ("commands", ("bench.commands", "bench.cli")),
]
# siblings inside one layer that must not import each other (generate and quality meet only in evaluation)
SIBLINGS = [("bench.generate", "bench.quality"), ("bench.quality", "bench.generate"),
            ("bench.quality", "bench.cost"), ("bench.generate", "bench.cost")]


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> int:
    if module in PACKAGES:   # a root's own __init__: re-exports nothing, lowest
        return 0
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if _under(module, (p,)) and len(p) > best:
                best, level = len(p), i
    if level is None:
        raise AssertionError(f"module {module} is in no layer: add its package to LAYERS")
    return level


def test_every_module_has_a_layer():
    for m in GRAPH:
        layer_of(m)


def test_imports_point_down_the_layers():
    bad = sorted(f"{m} ({LAYERS[layer_of(m)][0]}) -> {d} ({LAYERS[layer_of(d)][0]})"
                 for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m))
    assert bad == []


@pytest.mark.parametrize("who,never", SIBLINGS, ids=[f"{a}-{b}" for a, b in SIBLINGS])
def test_siblings_stay_apart(who, never):
    bad = sorted((m, d) for m, deps in GRAPH.items() if _under(m, (who,)) for d in deps if _under(d, (never,)))
    assert bad == []


def _package(module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` is the package itself)."""
    path = ROOT / Path(*module.split("."))
    parent = module.rpartition(".")[0]
    return module if path.is_dir() or parent in PACKAGES else parent or module


def package_graph(graph=None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, deps in (graph or GRAPH).items():
        pm = _package(m)
        out.setdefault(pm, set())
        for d in deps:
            pd = _package(d)
            if pd != pm and not pd.startswith(pm + ".") and not pm.startswith(pd + "."):
                out[pm].add(pd)
    return out


def test_no_import_cycles_between_packages():
    assert _cycles(package_graph()) == []


def test_the_package_checker_sees_a_package_cycle():
    graph = {"bench.a.x": {"bench.b.y"}, "bench.b.y": {"bench.a.z"}, "bench.a.z": set()}
    assert _cycles({k: v for k, v in {"bench.a": {"bench.b"}, "bench.b": {"bench.a"}}.items()}) == [["bench.a", "bench.b"]]
    assert len(graph) == 3


def test_baselines_hold_methods_not_the_harness():
    bad = sorted((m, d) for m, deps in GRAPH.items() if _under(m, ("baselines",)) for d in deps
                 if _under(d, ("bench.rows", "bench.evaluation", "bench.search", "bench.experiments")))
    assert bad == []
