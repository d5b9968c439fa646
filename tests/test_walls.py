"""The package's walls: each concern imports only what it owns (a test that fails when one is crossed)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "embedkit"
RULES = [  # (imported top-level package, the only package paths allowed to import it)
    ("h5py", ("cache/",)),                      # only the cache knows HDF5
    ("typer", ("cli/",)),                       # the CLI alone parses options ...
    ("rich", ("cli/",)),                        # ... and prints
    ("torch", ("cache/", "models/", "heads/", "finetune/", "audit/", "devices.py")),  # metrics, report, runs: numpy
    ("numba", ("metrics/kernels.py",)),        # compiled loops have one home, loaded only when resampling runs
]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("package, allowed", RULES, ids=[r[0] for r in RULES])
def test_only_the_owner_imports(package, allowed):
    crossing = [str(f.relative_to(SRC)) for f in FILES if package in _imports(f)
                and not str(f.relative_to(SRC)).startswith(allowed)]
    assert not crossing, f"{package} imported outside {allowed}: {crossing}"


def test_metrics_import_without_torch():
    import subprocess
    import sys

    code = "import sys, embedkit.metrics, embedkit.runs; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_no_module_imports_another_packages_private_names():
    """e.g. fine-tuning takes its image dataset from models.images, not from extraction's internals."""
    crossing = []
    for f in FILES:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedkit."):
                crossing += [f"{f.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, crossing


def _embedkit_imports(path: Path) -> set[str]:
    """The embedkit modules a file imports (lazy imports inside functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("embedkit"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("embedkit")}
    return out


# (package path, embedkit modules it may import): heads never reach the encoders; models import nothing downstream
LAYERS = [("heads/", ("embedkit.models",), "heads read cached features, never the encoders"),
          ("models/", ("embedkit.cache", "embedkit.heads", "embedkit.finetune", "embedkit.metrics", "embedkit.report",
                       "embedkit.study", "embedkit.cli", "embedkit.audit", "embedkit.runs"),
           "encoders import nothing downstream of them"),
          ("data/", ("embedkit.models", "embedkit.cache", "embedkit.heads", "embedkit.finetune", "embedkit.metrics",
                     "embedkit.report", "embedkit.study", "embedkit.cli", "embedkit.audit", "embedkit.runs"),
           "dataset builders read published files and write manifests; they know nothing downstream")]


@pytest.mark.parametrize("folder, forbidden, why", LAYERS, ids=[r[0] for r in LAYERS])
def test_layers_import_nothing_above_them(folder, forbidden, why):
    crossing = [f"{f.relative_to(SRC)}: {m}" for f in FILES if str(f.relative_to(SRC)).startswith(folder)
                for m in _embedkit_imports(f) if m.startswith(forbidden)]
    assert not crossing, f"{why}: {crossing}"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles():
    """No two modules reach each other through imports (every import counts, lazy ones included)."""
    modules = {_module(f): f for f in FILES}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    # a module importing its own package's __init__ is not a cycle here
    graph = {m: {r for r in map(resolve, _embedkit_imports(f)) if r and r != m and not m.startswith(r + ".")}
             for m, f in modules.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for m in graph:
        if m not in index:
            visit(m)
    assert not cycles, cycles


def test_files_and_functions_stay_readable():
    """No module over 400 lines, no function over 80."""
    long = []
    for f in FILES:
        text = f.read_text()
        if len(text.splitlines()) > 400:
            long.append(f"{f.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{f.relative_to(SRC)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
