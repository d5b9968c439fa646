"""One dialect for every command: shared option names, types, defaults, help and value checks.

Each concept has one option here (``--runs-dir``, ``--seeds`` with ranges like ``0-4``,
``--precision``, ...), and every value is parsed and checked where it is declared, so a bad value
is a usage error naming the option (exit 2), never a traceback from deep inside the library.
``SYNONYMS`` lists spellings we refuse to grow again; tests/cli/test_cli_options.py walks every
command against both tables. Parameters are annotated ``str`` for typer's parser; their callbacks
hand the command the parsed value (a tuple of seeds, of floats, of model names ...).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from embedkit import spec
from embedkit.errors import EmbedkitError
from embedkit.spec import FAIRNESS, PRECISIONS, SWEEP, TASK, WHERE

# Options shared by several commands: the same name, type, default and help wherever they appear.
SHARED = ("--model", "--manifest", "--runs-dir", "--cache-dir", "--cache-file", "--dataset", "--weights", "--seeds",
          "--lrs", "--weight-decays", "--epochs", "--batch-size", "--workers", "--precision", "--device", "--threads",
          "--quiet", "--force", "--wait", "--n-boot", "--n-perm", "--attributes", "--name", "--arch", "--selection",
          "--adjust", "--attribute")

# Spellings that mean a shared concept: an option may not use the left-hand name.
SYNONYMS = {
    "--runs": "--runs-dir", "--run-dir": "--runs-dir", "--cache": "--cache-file", "--caches": "--cache-dir",
    "--weight-decay": "--weight-decays", "--wd": "--weight-decays", "--lr": "--lrs", "--bf16": "--precision",
    "--fp16": "--precision", "--amp": "--precision", "--seed-list": "--seeds", "--num-threads": "--threads",
    "--silent": "--quiet", "--overwrite": "--force", "--gpu": "--device",
}


def _items(text: str, option: str) -> list[str]:
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"{option} needs at least one value")
    return items


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0-4`` (inclusive) or a mix (``spec.parse_seeds``, which the Python API shares)."""
    try:
        return spec.parse_seeds(text)
    except EmbedkitError as exc:
        raise typer.BadParameter(str(exc)) from None


def _numbers(text: str | None, option: str, kind, *, minimum: float, strict: bool):
    if text is None:
        return None
    out = []
    for item in _items(text, option):
        try:
            v = kind(item)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not a number; give a comma-separated list, e.g. "
                                     f"{'1e-4,1e-3' if kind is float else '5,10,20'}") from None
        if v < minimum or (strict and v == minimum):
            raise typer.BadParameter(f"{item!r} must be {'>' if strict else '>='} {minimum:g}")
        out.append(v)
    return tuple(out)


def parse_lrs(text: str | None) -> tuple[float, ...] | None:
    return _numbers(text, "--lrs", float, minimum=0.0, strict=True)


def parse_weight_decays(text: str | None) -> tuple[float, ...] | None:
    return _numbers(text, "--weight-decays", float, minimum=0.0, strict=False)


def parse_ks(text: str) -> tuple[int, ...]:
    return _numbers(text, "--ks", int, minimum=1, strict=False)


def parse_precision(text: str) -> str:
    if text not in PRECISIONS:
        raise typer.BadParameter(f"{text!r}: choose {', '.join(PRECISIONS)}")
    return text


def _checked(check, text: str) -> str:
    """``text`` after ``check(text)`` passed; the library's error becomes a usage error naming the option."""
    try:
        check(text)
    except EmbedkitError as exc:
        raise typer.BadParameter(str(exc).split(": ", 1)[-1]) from None
    return text


def parse_device(text: str) -> str:
    """Check the device exists here now, so a missing GPU is a usage error and not a driver crash."""
    from embedkit.devices import check_device

    return _checked(check_device, text)


def _choices(text: str, option: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(_items(text, option))
    for item in items:
        if item not in valid:
            close = difflib.get_close_matches(item, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise typer.BadParameter(f"{item!r} is not one of {', '.join(valid)}{hint}")
    return items


def parse_heads(text: str) -> tuple[str, ...]:
    """Registered heads (every cache-path method but zero-shot, which has its own command)."""
    from embedkit.heads import base

    return _choices(text, "--head", tuple(n for n in base.heads() if n != "zeroshot"))


def parse_interventions(text: str) -> tuple[str, ...]:
    """Registered fairness interventions; '' for none."""
    from embedkit.heads import base

    return _choices(text, "--mitigate", base.interventions()) if text.strip() else ()


def parse_selection(text: str) -> str:
    from embedkit.heads.selection import check

    return _checked(check, text)


def parse_models(text: str) -> tuple[str, ...]:
    """Comma-separated model names: registered ones (with ``-tiny`` variants), or the name a user gave
    their own checkpoint (``--name``), which must not look like a typo of a registered one."""
    import re

    from embedkit.models import registry

    valid = tuple(registry.names()) + tuple(f"{n}-tiny" for n in registry.names())
    items = tuple(_items(text, "--model"))
    for item in items:
        close = difflib.get_close_matches(item, valid, n=1, cutoff=0.8)
        if item not in valid and (close or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", item)):
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise typer.BadParameter(f"{item!r} is not one of {', '.join(valid)}{hint}")
    return items


def one_model(text: str) -> str:
    models = parse_models(text)
    if len(models) != 1:
        raise typer.BadParameter("give one model here")
    return models[0]


def model_option(*, several: bool = True):
    return typer.Option(..., "--model", callback=parse_models if several else one_model,
                        help="Encoder name(s) from `embedkit models`" + (", comma-separated." if several else "."))


def manifest_option():
    return typer.Option(..., "--manifest", exists=True, dir_okay=False, help="Manifest CSV (see docs/data.md).")


def seeds_option(default: str = ",".join(map(str, SWEEP.seeds)), what: str = "Seeds"):
    return typer.Option(default, "--seeds", callback=parse_seeds, help=f"{what}: 0,1,2 or a range 0-4.")


def runs_dir_option(*, must_exist: bool = False):
    return typer.Option(WHERE.runs_dir, "--runs-dir", exists=must_exist, file_okay=False,
                        help="Folder of run folders (<runs-dir>/<dataset>/<model>/<method>/seed-<k>).")


def cache_dir_option(*, must_exist: bool = False):
    return typer.Option(WHERE.cache_dir, "--cache-dir", exists=must_exist, file_okay=False, help="Folder of cache files.")


def cache_file_option():
    return typer.Option(None, "--cache-file", exists=True, dir_okay=False,
                        help="Use this cache file instead of looking one up in --cache-dir.")


def dataset_option():
    return typer.Option(None, "--dataset", help="Dataset name in the run path (default: the manifest's folder name).")


def lrs_option(default_help: str):
    return typer.Option(None, "--lrs", callback=parse_lrs,
                        help=f"Learning rates, comma-separated, chosen on validation (default: {default_help}).")


def weight_decays_option(default_help: str):
    return typer.Option(None, "--weight-decays", callback=parse_weight_decays,
                        help=f"Weight decays, comma-separated, chosen on validation (default: {default_help}).")


def epochs_option(default: int = SWEEP.epochs):
    return typer.Option(default, "--epochs", min=1, help="Training epochs (the epoch with the lowest validation loss is kept).")


def batch_size_option(default: int = SWEEP.batch_size):
    return typer.Option(default, "--batch-size", min=1, help="Images (or feature rows) per batch.")


def precision_option():
    return typer.Option("fp32", "--precision", callback=parse_precision,
                        help="Compute precision: fp32 (the authors' numbers), bf16, fp16 (GPU).")


def device_option():
    return typer.Option("auto", "--device", callback=parse_device, help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")


def threads_option():
    return typer.Option(None, "--threads", min=1, show_default=False,
                        help="Threads (default, as measured in docs/benchmarks.md: one to train and audit; the "
                             "statistics' blocks of replicates a core each where there are several).")


def quiet_option():
    return typer.Option(False, "--quiet", help="No progress display.")


def force_option():
    return typer.Option(False, "--force", help="Redo work that is already finished.")


def wait_option():
    return typer.Option(False, "--wait", help="Wait for another process holding the lock instead of exiting with code 3.")


def n_boot_option(default: int = FAIRNESS.n_boot):
    return typer.Option(default, "--n-boot", min=0, help="Bootstrap resamples (and permutations) per run.")


def parse_attributes(text: str | None) -> str | None:
    """A declaration like 'sex,age:60,race,sex*age', checked here and passed on as text; None (not given): the
    default declaration, which keeps only the attributes the data has (a file without age is scored by sex)."""
    from embedkit.attributes import parse

    return None if text is None else _checked(parse, text)


def name_option():
    return typer.Option(None, "--name", help="Name of your own checkpoint (generic adapters: open_clip, hf-clip, "
                                             "hf-vision); keys its cache and run folders. Default: from the weights.")


def arch_option():
    return typer.Option(None, "--arch", help="open_clip architecture of a bare state dict (e.g. ViT-B-32, or a "
                                             "model-config JSON).")


def attributes_option():
    from embedkit.attributes import DEFAULT

    return typer.Option(None, "--attributes", callback=parse_attributes, show_default=DEFAULT,
                        help="Sensitive attributes: manifest columns, numbers banded at cut points (age:40,60,80; "
                             "age alone: young < 60 <= old), intersections (sex*age).")


def weights_option():
    return typer.Option([], "--weights", help="Weights file or folder (see `embedkit models`); MODEL=PATH with several "
                                             "models (repeatable).")


def per_model(values: list[str], models: tuple[str, ...], option: str) -> dict[str, Path]:
    """``PATH`` (one model) or ``MODEL=PATH`` items -> {model: path}; paths must exist."""
    out = {}
    for v in values:
        if "=" in v:
            name, path = v.split("=", 1)
        elif len(models) == 1:
            name, path = models[0], v
        else:
            raise typer.BadParameter(f"{v!r}: with several models write MODEL=PATH", param_hint=option)
        if name not in models:
            raise typer.BadParameter(f"{v!r}: {name} is not among --model {','.join(models)}", param_hint=option)
        if not path.startswith("hf-hub:") and not Path(path).exists():
            raise typer.BadParameter(f"{path}: no such file or folder", param_hint=option)
        out[name] = path if path.startswith("hf-hub:") else Path(path)
    return out


def n_perm_option():
    return typer.Option(FAIRNESS.n_perm, "--n-perm", min=0,
                        help="Label permutations: p-values, noise floors and chance baselines.")


def selection_option():
    from embedkit.heads.selection import STRATEGIES

    return typer.Option(FAIRNESS.selection, "--selection", callback=parse_selection,
                        help=f"Choosing among the sweep on validation: {', '.join(STRATEGIES)} (MEDFAIR's overall, pareto "
                             "and dto on per-group AUC; loss: the paper's).")


def one_of(option: str, valid: tuple[str, ...]):
    """A callback accepting exactly one of ``valid`` for ``option`` (did-you-mean on a typo)."""
    def parse(text: str | None) -> str | None:
        if text is None:                        # an option without a default: chosen later (e.g. from a file name)
            return None
        items = _choices(text, option, valid)
        if len(items) != 1:
            raise typer.BadParameter(f"give one of {', '.join(valid)}")
        return items[0]
    return parse


def adjust_option():
    from embedkit.metrics.intervals import ADJUSTMENTS

    return typer.Option(FAIRNESS.adjust, "--adjust", callback=one_of("--adjust", ADJUSTMENTS),
                        help="Multiple-testing adjustment over the report's gaps: bh (false discovery rate) or holm.")


def acted_on_option():
    from embedkit.attributes import ACTED_ON

    return typer.Option(ACTED_ON, "--attribute", callback=parse_attributes,
                        help="The attribute interventions and fairness-aware selection act on.")


def task_option():
    from embedkit.tasks import KINDS

    return typer.Option(TASK.kind, "--task", callback=one_of("--task", KINDS),
                        help="multiclass (one class per image, the paper's), binary (--positive) or multilabel "
                             "(findings separated by | in the manifest's label).")


def findings_option():
    return typer.Option(None, "--findings", help="Multi-label: the findings, comma-separated (default: every "
                                                 "finding the manifest lists).")


def positive_option():
    return typer.Option(None, "--positive", help="Binary: the finding against the rest, or 'No Finding' against any.")


def threshold_option():
    return typer.Option(TASK.threshold, "--threshold", help="Rule choosing each finding's threshold on validation: "
                                                            "f1 (default), youden or fpr:X (e.g. fpr:0.1).")
