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


def _is_command(module: str) -> bool:
    return (module == "bench.cli" or module.startswith("bench.commands") or module.endswith(".commands")
            or module == "bench.cost.figures")


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# (who, what it must never import)
FORBIDDEN = [
    (("flexiffusion",), ("bench", "baselines")),
    (("bench.embedded",), ("bench.models", "bench.generate", "bench.quality", "bench.cost", "bench.evaluation",
                           "bench.commands", "bench.cli", "baselines")),
    (("bench.models",), ("bench.generate", "bench.quality", "bench.cost", "bench.evaluation", "bench.commands",
                         "bench.cli", "baselines")),
    (("bench.generate",), ("bench.quality", "bench.evaluation", "bench.commands", "bench.cli")),
    (("bench.quality",), ("bench.generate", "bench.evaluation", "bench.commands", "bench.cli", "baselines")),
    # renderers read the store (and experiment specs as data) and draw; they never sample, score or search
    # (commands feed them); nothing below the commands imports them
    (("flexiffusion", "bench", "baselines"), ("reports",)),
    (("reports",), ("bench.models", "bench.generate", "bench.quality", "bench.evaluation", "bench.rows",
                    "bench.experiments.runner", "bench.search", "bench.embedded", "bench.commands", "bench.cli",
                    "baselines")),
    (("bench.experiments.spec", "bench.experiments.models", "bench.experiments.cells"),
     ("bench.generate", "bench.models", "bench.quality", "bench.evaluation", "baselines", "reports")),
]


@pytest.mark.parametrize("who,never", FORBIDDEN, ids=[w[0][0] for w in FORBIDDEN])
def test_layers_point_one_way(who, never):
    bad = sorted((m, d) for m, deps in GRAPH.items() if _under(m, who) and not _is_command(m)
                 for d in deps if _under(d, never))
    assert bad == []


def test_only_commands_import_commands():
    bad = sorted((m, d) for m, deps in GRAPH.items() if not _is_command(m) for d in deps if _is_command(d))
    assert bad == []
