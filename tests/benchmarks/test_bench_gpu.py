"""The prepared single-GPU benchmark must keep running: its --quick mode on CPU with tiny models."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_quick_on_cpu_writes_its_tables(tmp_path):
    out = tmp_path / "gpu.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_gpu.py"), "--device", "cpu", "--quick", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    for model in ("clip", "biomedclip", "medclip-vit", "medclip-rn50", "gloria"):
        assert f"| {model} | fp32 | 4 |" in text
    rates = [float(line.split("|")[2].replace(",", "")) for line in text.splitlines() if line.startswith(("| 1 |", "| 8 |"))]
    assert rates[1] == pytest.approx(8 * rates[0], abs=4.5)      # both shown rounded to whole images per second


def test_bench_gpu_without_cuda_says_what_to_do(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_gpu.py"), "--out", str(tmp_path / "x.md")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "--device cpu --quick" in run.stderr
