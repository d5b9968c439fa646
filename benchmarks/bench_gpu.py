"""Single-GPU extraction throughput (`make bench-gpu`): the figure the NIH scale-out estimate needs.

For each encoder at its published size (random weights: the same cost as the real ones), the bare
image forward in img/s at fp32 and bf16; then `embedkit extract` end to end on NIH-sized 1024² PNGs
with the default decode workers, which shows whether decoding or the encoder bounds a GPU. Writes a
markdown section (default docs/benchmarks-gpu.md). ``--quick`` runs tiny models on CPU, so the
script is tested where no GPU is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common import full_encoder  # noqa: E402

MODELS = ("clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria")
NIH_IMAGES = 112_120


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_rate(enc, device: torch.device, precision: str, batch: int, steps: int) -> float:
    """Images/s of the bare image forward on random input of the encoder's input size, after a warm-up."""
    from embedkit.cache.extract import DTYPES

    dtype = DTYPES[precision]
    tower = enc.image_tower.to(device=device, dtype=dtype).eval()
    size = enc.preprocess(Image.new("L", (8, 8))).shape
    x = torch.randn((batch, *size), device=device, dtype=dtype)
    with torch.inference_mode():
        tower(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tower(x)
        _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def nih_like(folder: Path, n: int, size: int) -> Path:
    """A manifest of ``n`` rows over copies of 120 phantom PNGs of ``size``² (decode cost as for NIH)."""
    from embedkit.data.phantom import PhantomSpec, make_phantom
    from embedkit.manifest import read_manifest, write_manifest

    make_phantom(folder / "src", PhantomSpec(per_group=5, size=size, seed=0))
    base = read_manifest(folder / "src/manifest.csv")
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        source = base.rows[i % len(base.rows)]
        rows.append(dict(source, image_id=f"x{i:06d}", path=f"images/x{i:06d}.png"))
        shutil.copyfile(base.image_path(source), folder / rows[-1]["path"])
    return write_manifest(folder / "manifest.csv", rows)


def pipeline_rate(model: str, weights: Path, manifest: Path, cache_dir: Path, device: str, batch: int) -> dict:
    """`extract` img/s (decode, preprocessing, forward, chunk files), its once-per-file seconds (model load,
    key, prompt embeddings, assembly) and its decode worker count."""
    from embedkit.cache.extract import ExtractConfig, extract
    from embedkit.devices import auto_workers
    from embedkit.devices import resolve_device

    cfg = ExtractConfig(manifest=manifest, models=(model,), cache_dir=cache_dir, batch_size=batch, device=device,
                        weights={model: weights})
    t0 = time.perf_counter()
    result = extract(cfg)[0]
    return {"img_s": result.images_per_s, "fixed_s": time.perf_counter() - t0 - result.seconds,
            "workers": auto_workers(resolve_device(device))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="docs/benchmarks-gpu.md")
    ap.add_argument("--images", type=int, default=2048, help="rows of the end-to-end extraction")
    ap.add_argument("--quick", action="store_true", help="tiny models, 64 px, few images (tests the script on CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here; run on a GPU machine, or pass --device cpu --quick")
    from embedkit.models import get, load_encoder

    batch, steps, px = (4, 2, 64) if args.quick else (256, 10, 1024)
    precisions = ("fp32",) if device.type == "cpu" else ("fp32", "bf16")
    rows, rates = [], {}
    for name in MODELS:
        enc = load_encoder(f"{name}-tiny") if args.quick else full_encoder(name)
        for precision in precisions:  # fp32 first: the tower is cast in place
            rates[name, precision] = forward_rate(enc, device, precision, batch, steps)
            rows.append(f"| {name} | {precision} | {batch} | {rates[name, precision]:,.0f} |")
        del enc
        if device.type == "cuda":
            torch.cuda.empty_cache()

    tmp = Path(tempfile.mkdtemp())
    model = "clip-tiny" if args.quick else "clip"
    enc = load_encoder(model) if args.quick else full_encoder(model)
    weights = get(model).save(enc, tmp / "open_clip_pytorch_model.bin")
    manifest = nih_like(tmp / "data", 48 if args.quick else args.images, px)
    run = pipeline_rate(model, weights, manifest, tmp / "cache", args.device, 8 if args.quick else 64)
    shutil.rmtree(tmp, ignore_errors=True)

    per_gpu, forward = run["img_s"], rates[model.removesuffix("-tiny"), "fp32"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = (f"# Benchmarks on one GPU\n\n{name}; measured {time.strftime('%Y-%m-%d')}; torch {torch.__version__}; command: "
            f"`make bench-gpu` (= `python benchmarks/bench_gpu.py`){' --quick' if args.quick else ''}.\n\n"
            f"## Bare image forward ({'tiny models' if args.quick else 'published sizes, random weights'})\n\n"
            "| model | precision | batch | img/s |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"## `embedkit extract` end to end ({model}, {px}² PNGs, fp32, {run['workers']} decode workers)\n\n"
            f"{per_gpu:,.0f} img/s against a bare fp32 forward of {forward:,.0f} img/s (ratio {per_gpu / forward:.2f}); "
            f"once-per-file costs {run['fixed_s']:.1f} s.\n\n"
            f"## Estimate for the full NIH set ({NIH_IMAGES:,} images)\n\nOne extraction rank per GPU, each with this "
            "machine's CPU share for decoding, scaling linearly (shards share nothing until the join), plus the "
            "once-per-file costs above:\n\n"
            "| GPUs | img/s | wall time |\n|---|---|---|\n"
            + "\n".join(f"| {g} | {g * per_gpu:,.0f} | {(NIH_IMAGES / (g * per_gpu) + run['fixed_s']) / 60:.1f} min |"
                         for g in (1, 8, 32)) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
