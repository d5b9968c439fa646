"""`embedkit extract` and `embedkit cache ls|verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli import options as opt
from embedkit.cli.console import console, table
from embedkit.spec import WHERE

app = typer.Typer(help="Inspect embedding caches.", no_args_is_help=True)


def _shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise typer.BadParameter(f"{text!r}: shard i of n needs 0 <= i < n")
    return i, n


def _dtype(text: str) -> str:
    if text not in ("float32", "float16"):
        raise typer.BadParameter(f"{text!r}: choose float32 or float16")
    return text


def extract(
    model: str = opt.model_option(), manifest: Path = opt.manifest_option(),
    cache_dir: Path = opt.cache_dir_option(),
    weights: list[str] = opt.weights_option(),
    name: Optional[str] = opt.name_option(), arch: Optional[str] = opt.arch_option(),
    tokenizer: list[str] = typer.Option([], help="Tokenizer folder for MedCLIP/GLoRIA text (MODEL=DIR)."),
    batch_size: int = opt.batch_size_option(),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader worker processes decoding images (default: "
                                                           "several beside a GPU, none on CPU — measured faster there)."),
    dtype: str = typer.Option("float32", callback=_dtype, help="Stored embedding dtype: float32 or float16."),
    precision: str = opt.precision_option(), device: str = opt.device_option(),
    skip_bad: bool = typer.Option(False, help="Leave unreadable images out (listed in the file) instead of stopping."),
    text_only: bool = typer.Option(False, help="Only refresh the prompt embeddings of existing caches."),
    quiet: bool = opt.quiet_option(), wait: bool = opt.wait_option(),
    shard: Optional[str] = typer.Option(None, callback=_shard, help="i/n: extract only shard i of n (e.g. a SLURM array "
                                        "task); the last shard to finish assembles the cache. Under torchrun: automatic."),
) -> None:
    """Run frozen encoders once over a manifest and store image and prompt embeddings in HDF5."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from embedkit.cache.extract import ExtractConfig, extract as run_extract

    from embedkit.models.registry import name_generic

    models, weights_of = name_generic(model, opt.per_model(weights, model, "--weights"), name=name, arch=arch)
    cfg = ExtractConfig(manifest=manifest, models=models, cache_dir=cache_dir, wait=wait,
                        weights=weights_of, tokenizers=opt.per_model(tokenizer, models, "--tokenizer"),
                        batch_size=batch_size, workers=workers, dtype=dtype, precision=precision, device=device,
                        skip_bad=skip_bad, text_only=text_only, shard=shard)
    if quiet:
        results = run_extract(cfg)
    else:
        with Progress(TextColumn("extract " + ",".join(models)), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("", total=None, rate="")
            state = {}

            def progress(done: int, total: int) -> None:
                import time

                state.setdefault("t0", (time.perf_counter(), done))
                t0, d0 = state["t0"]
                rate = (done - d0) / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:.1f} img/s" if done > d0 else "")

            results = run_extract(cfg, on_progress=progress)
    for r in results:
        if not r.joined:
            console.print(f"{r.model}: shard done ({r.n} rows, {r.seconds:.1f} s); the last shard to finish writes {r.path}",
                          highlight=False)
            continue
        how = ("reused: every image already in the store" if r.reused else
               f"{r.added} new image(s) encoded and appended in {r.seconds:.1f} s, {r.added / max(r.seconds, 1e-9):.1f} img/s")
        bad = f", {len(r.bad)} bad image(s) left out" if r.bad else ""
        console.print(f"{r.model}: {r.path} (N={r.n}, D={r.dim}; {how}{bad})", highlight=False)
        for path, reason in r.bad[:20]:
            console.print(f"  bad: {path}: {reason}", highlight=False)


@app.command("ls")
def ls(cache_dir: Path = typer.Argument(WHERE.cache_dir, exists=True, file_okay=False, help="Folder of cache files.")) -> None:
    """List cache files."""
    from embedkit.cache import list_caches
    from embedkit.errors import EmbedkitError

    found = list_caches(cache_dir)
    if not found:
        raise EmbedkitError(f"{cache_dir}: no cache files (*.h5) here; make them with `embedkit extract`")
    table(f"stores in {cache_dir}", ["file", "model", "images", "D", "dtype", "MiB", "complete", "prompt sets",
                                      "manifests extracted into it"],
          [[c["path"].name, c.get("model") or f"damaged ({c.get('error', 'unreadable')}): embedkit cache verify FILE",
            c.get("n", "?"), c.get("dim", "?"), c.get("dtype") or "?",
            f"{c['path'].stat().st_size / 2**20:.1f}", "yes" if c["complete"] else "NO", ",".join(c.get("text", [])),
            "; ".join(f"{Path(m['path']).name} (+{m['added']})" for m in c.get("manifests", [])[-4:])] for c in found])


@app.command("verify")
def verify(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A cache .h5 file.")) -> None:
    """Check a cache: complete, checksums intact, key consistent."""
    from embedkit.cache import verify_cache

    info = verify_cache(file)
    console.print(f"{file}: OK — {info['model']}, N={info['n']}, D={info['dim']}, {info['dtype']}, "
                  f"prompt sets {', '.join(info['text']) or 'none'}", highlight=False)
