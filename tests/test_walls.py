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
