"""The run spec: each main default in one place, and the study schema derived from the configs and registries."""

import ast
import re
from pathlib import Path

import pytest

from embedkit.spec import FAIRNESS, SWEEP, WHERE

SRC = Path(__file__).parents[1] / "src" / "embedkit"
HOME = {"spec.py", "metrics/suite.py"}          # where the main defaults live (N_BOOT, N_PERM in the statistics)
SETTINGS = {"epochs", "batch_size", "n_boot", "n_perm", "selection", "adjust", "seeds", "runs_dir", "cache_dir"}


def _defaults(tree: ast.AST):
    """(name, value node) of every function parameter default, class-level field default and typer.Option default."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            yield from zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults)
            yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    yield item.target.id, item.value
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Option" and node.args:
            yield "option", node.args[0]


def _literal(node: ast.AST) -> bool:
    """A value written out here rather than taken from its home (a constant, a tuple of them, Path("x"))."""
    if isinstance(node, ast.Constant):
        return node.value is not None and not isinstance(node.value, bool)
    if isinstance(node, (ast.Tuple, ast.List)):
        return bool(node.elts) and all(_literal(e) for e in node.elts)
    return isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path" and all(map(_literal, node.args))


def test_the_main_defaults_live_in_one_module():
    restated = []
    for f in sorted(SRC.rglob("*.py")):
        rel = str(f.relative_to(SRC))
        if rel in HOME:
            continue
        for name, value in _defaults(ast.parse(f.read_text())):
            main_number = isinstance(value, ast.Constant) and type(value.value) is int and value.value in (150, 1000)
            if (name in SETTINGS and _literal(value)) or main_number:
                restated.append(f"{rel}:{value.lineno} {name} = {ast.unparse(value)}")
    assert not restated, restated


def test_configs_and_options_take_the_spec_defaults():
    from embedkit.cache.extract import ExtractConfig
    from embedkit.finetune.train import FinetuneConfig
    from embedkit.heads.runner import ExperimentConfig
    from embedkit.heads.trained import HeadConfig

    assert HeadConfig().epochs == FinetuneConfig.epochs == SWEEP.epochs
    assert HeadConfig().batch_size == FinetuneConfig.batch_size == ExtractConfig.batch_size == SWEEP.batch_size
    assert ExperimentConfig.n_boot == FinetuneConfig.n_boot == FAIRNESS.n_boot
    assert ExperimentConfig.runs_dir == FinetuneConfig.runs_dir == WHERE.runs_dir


def test_the_study_schema_lists_nothing_by_hand():
    """Its methods, interventions, strategies, formats, families and data kinds come from the registries."""
    from embedkit.heads import base
    from embedkit.heads.selection import STRATEGIES
    from embedkit.models import registry
    from embedkit.prompts import FORMATS
    from embedkit.study.data import kinds
    from embedkit.study.schema import schema

    defs = schema().model_json_schema()["$defs"]
    assert set(defs["Methods"]["properties"]) == {*base.heads(), "lora", "full"}
    linear = defs["Linear"]["properties"]
    assert set(linear["mitigate"]["items"]["enum"]) == set(base.interventions())
    assert set(linear["selection"]["enum"]) == set(STRATEGIES) and linear["epochs"]["default"] == SWEEP.epochs
    tables = [d for n, d in defs.items() if n.startswith("Data") or n == "Manifest"]
    assert {d["properties"]["kind"]["const"] for d in tables} == set(kinds())
    family = defs["Model"]["properties"]["family"]["anyOf"][0]["enum"]
    assert set(family) == set(registry.generic_names())
    prompts = str(defs["Zeroshot"]["properties"]["prompts"])
    assert all(f in prompts for f in FORMATS)


@pytest.mark.parametrize("path", sorted(p.name for p in (Path(__file__).parents[1] / "studies").glob("*.toml")))
def test_every_study_config_validates(path):
    from embedkit.study import load_study

    assert load_study(Path(__file__).parents[1] / "studies" / path).methods


def test_docs_study_md_is_the_schema():
    """docs/study.md lists every study key as the schema has it: a renamed or removed key fails here."""
    from embedkit.study.schema import markdown

    doc = Path(__file__).parents[1] / "docs" / "study.md"
    assert doc.read_text() == markdown(), "regenerate: python -c 'from embedkit.study.schema import markdown; " \
                                          "open(\"docs/study.md\", \"w\").write(markdown())'"


def test_every_documented_cli_option_exists():
    import re

    import typer

    from embedkit.cli.app import app

    def options(group):
        for cmd in group.commands.values():
            if hasattr(cmd, "commands"):
                yield from options(cmd)
            else:
                yield from (o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", []))

    known = set(options(typer.main.get_command(app))) | {"--help", "--version"}
    root = Path(__file__).parents[1]
    documented = {}
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if "embedkit " in line or line.lstrip().startswith("|"):
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*", line):
                    documented.setdefault(opt, doc.name)
    # options of other tools that the docs quote (torchrun, pip, chromium, make, pytest)
    others = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--standalone",
              "--no-deps", "--array", "--wrap", "--only", "--rows", "--models", "--datasets", "--headless",
              "--rdzv"}                     # README: `--rdzv-*`
    missing = {o: d for o, d in documented.items() if o not in known and o not in others}
    assert not missing, missing


@pytest.mark.parametrize("make, message", [
    (lambda: _head(epochs=0), "--epochs 0: must be at least 1"),
    (lambda: _head(lrs=(1e-3, -1e-2)), "--lrs -0.01: must be greater than 0"),
    (lambda: _head(weight_decays=(-1.0,)), "--weight-decays -1.0: must be at least 0"),
    (lambda: _head(dropout=1.0), "--dropout 1.0: must be below 1"),
    (lambda: _experiment(seeds=(0, -1)), "--seeds -1: must be at least 0"),
    (lambda: _experiment(seeds=tuple("0-1")), "--seeds '0': must be a number"),
    (lambda: _experiment(ks=(5, 0)), "--ks 0: must be at least 1"),
    (lambda: _experiment(n_boot=-5), "--n-boot -5: must be at least 0"),
    (lambda: _finetune(rank=0), "--rank 0: must be at least 1"),
    (lambda: _finetune(workers=-1), "--workers -1: must be at least 0"),
    (lambda: _extract(batch_size=0), "--batch-size 0: must be at least 1"),
    (lambda: _audit(n_perm=-1), "--n-perm -1: must be at least 0"),
])
def test_a_setting_out_of_its_bounds_is_refused_when_the_config_is_made(make, message):
    """The Python API and a study make these configs without the CLI's checks: the bounds hold there too."""
    from embedkit.errors import EmbedkitError

    with pytest.raises(EmbedkitError, match=f"^{re.escape(message)}$"):
        make()


def test_the_bounds_within_them_pass_and_the_study_schema_enforces_the_same():
    from embedkit.study.schema import validate
    from embedkit.errors import EmbedkitError

    assert _head(epochs=1, lrs=(1e-9,), weight_decays=(0.0,), dropout=0.0).epochs == 1
    assert _experiment(seeds=(0,), ks=(1,), n_boot=0).n_boot == 0 and _finetune(workers=0).workers == 0
    study = {"data": {"kind": "manifest", "path": "m.csv"}, "models": {"clip": {}},
             "methods": {"linear": {"epochs": 0, "lrs": [-1.0]}, "lora": {"rank": 0}}, "seeds": [-2], "folds": 1}
    with pytest.raises(EmbedkitError) as err:
        validate(study, Path("s.toml"))
    for key in ("methods.linear.epochs", "methods.linear.lrs.0", "methods.lora.rank", "seeds.0", "folds"):
        assert f"'{key}'" in str(err.value)


@pytest.mark.parametrize("text, seeds", [("0-4", (0, 1, 2, 3, 4)), ("3", (3,)), ("2, 0-1,2", (2, 0, 1)), ("1,,2", (1, 2))])
def test_seeds_as_text_read_the_same_in_the_api_and_the_cli(text, seeds):
    from embedkit.cli.options import parse_seeds
    from embedkit.spec import as_seeds

    assert as_seeds(text) == parse_seeds(text) == seeds
    assert as_seeds(3) == (3,) and as_seeds([0, 1]) == (0, 1)


@pytest.mark.parametrize("text", ["0-x", "-3", "4-2", "a", ""])
def test_a_bad_seed_text_is_named(text):
    import typer

    from embedkit.cli.options import parse_seeds
    from embedkit.errors import EmbedkitError
    from embedkit.spec import as_seeds

    message = "--seeds needs at least one value" if not text else f"{text!r} is not a seed; use integers and ranges"
    with pytest.raises(EmbedkitError, match=re.escape(message)):
        as_seeds(text)
    with pytest.raises(typer.BadParameter, match=re.escape(message)):
        parse_seeds(text)


def _head(**kw):
    from embedkit.heads.trained import HeadConfig

    return HeadConfig(**kw)


def _experiment(**kw):
    from embedkit.heads.runner import ExperimentConfig

    return ExperimentConfig("m", Path("m.csv"), "linear", **kw)


def _finetune(**kw):
    from embedkit.finetune.train import FinetuneConfig

    return FinetuneConfig("m", Path("m.csv"), "lora", **kw)


def _extract(**kw):
    from embedkit.cache.extract import ExtractConfig

    return ExtractConfig(Path("m.csv"), ("m",), **kw)


def _audit(**kw):
    from embedkit.audit import AuditConfig

    return AuditConfig("m", Path("m.csv"), **kw)
