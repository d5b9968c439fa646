"""`embedkit extract` and `embedkit cache ls|verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedkit.cli.console import console, table

app = typer.Typer(help="Inspect embedding caches.", no_args_is_help=True)


def _per_model(values: list[str], models: tuple[str, ...], option: str) -> dict[str, Path]:
    """``PATH`` (one model) or ``model=PATH`` items -> {model: path}."""
    from embedkit.errors import EmbedkitError

    out = {}
    for v in values:
        if "=" in v:
            name, path = v.split("=", 1)
        elif len(models) == 1:
            name, path = models[0], v
        else:
            raise EmbedkitError(f"{option} {v!r}: with several models write MODEL=PATH")
        out[name] = Path(path)
    return out


def extract(
    model: str = typer.Option(..., help="Model name(s), comma-separated: clip,biomedclip,… (or *-tiny)."),
    manifest: Path = typer.Option(..., help="Manifest CSV."),
    cache_dir: Path = typer.Option(Path("cache"), help="Where cache files live."),
    weights: list[str] = typer.Option([], help="Weights file/folder (MODEL=PATH with several models)."),
    tokenizer: list[str] = typer.Option([], help="Tokenizer folder for MedCLIP/GLoRIA text (MODEL=DIR)."),
    batch_size: int = typer.Option(32),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes decoding images (default: several "
                                                      "beside a GPU, none on CPU — measured faster there)."),
    dtype: str = typer.Option("float32", help="Stored embedding dtype: float32 or float16."),
    precision: str = typer.Option("fp32", help="Compute precision: fp32 (default, the authors' numbers), bf16, fp16 (GPU)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 …"),
    skip_bad: bool = typer.Option(False, help="Leave unreadable images out (listed in the file) instead of stopping."),
    text_only: bool = typer.Option(False, help="Only refresh the prompt embeddings of existing caches."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    shard: Optional[str] = typer.Option(None, help="i/n: extract only shard i of n (e.g. a SLURM array task); "
                                                   "the last shard to finish assembles the cache. Under torchrun: automatic."),
) -> None:
    """Run frozen encoders once over a manifest and store image and prompt embeddings in HDF5."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from embedkit.cache.extract import ExtractConfig, extract as run_extract

    models = tuple(m.strip() for m in model.split(",") if m.strip())
    cfg = ExtractConfig(manifest=manifest, models=models, cache_dir=cache_dir,
                        weights=_per_model(weights, models, "--weights"), tokenizers=_per_model(tokenizer, models, "--tokenizer"),
                        batch_size=batch_size, workers=workers, dtype=dtype, precision=precision, device=device,
                        skip_bad=skip_bad, text_only=text_only, shard=_shard(shard))
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
        how = "reused" if r.reused else f"{r.seconds:.1f} s, {r.images_per_s:.1f} img/s"
        bad = f", {len(r.bad)} bad image(s) left out" if r.bad else ""
        console.print(f"{r.model}: {r.path} (N={r.n}, D={r.dim}; {how}{bad})", highlight=False)
        for image_id, reason in r.bad[:20]:
            console.print(f"  bad: {image_id}: {reason}", highlight=False)


def _shard(text: str | None) -> tuple[int, int] | None:
    from embedkit.errors import EmbedkitError

    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise EmbedkitError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    return i, n


@app.command("ls")
def ls(cache_dir: Path = typer.Argument(Path("cache"))) -> None:
    """List cache files."""
    from embedkit.cache import list_caches

    table(f"caches in {cache_dir}", ["file", "model", "N", "D", "dtype", "complete", "prompt sets", "manifest"],
          [[c["path"].name, c.get("model"), c.get("n", "?"), c.get("dim", "?"), c.get("dtype", "?"),
            "yes" if c["complete"] else "NO", ",".join(c.get("text", [])), c.get("manifest", "")] for c in list_caches(cache_dir)])


@app.command("verify")
def verify(file: Path = typer.Argument(..., help="A cache .h5 file.")) -> None:
    """Check a cache: complete, checksums intact, key consistent."""
    from embedkit.cache import verify_cache

    info = verify_cache(file)
    console.print(f"{file}: OK — {info['model']}, N={info['n']}, D={info['dim']}, {info['dtype']}, "
                  f"prompt sets {', '.join(info['text']) or 'none'}", highlight=False)
