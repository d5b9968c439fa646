"""The grid benchmark's FLOP count and its "what limits the grid" text, from given measurements."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_heads  # noqa: E402


def test_one_models_gemm_work_is_counted_by_hand():
    # linear, 512-d, 5 seeds x 4 sweep points x 6 classes: forward + weight gradient per train row, forward per val row
    per_row = 2 * 512 * 6 * 20
    assert bench_heads.grid_gflop(bench_heads.MODELS[:1])["linear"] == 150 * (840 * 2 * per_row + 120 * per_row) / 1e9
    whole = bench_heads.grid_gflop()
    assert whole["linear"] > 5 * bench_heads.grid_gflop(bench_heads.MODELS[:1])["linear"]   # GLoRIA is 768-d


def _costs(kind, total, gemm, adamw, five, twenty):
    return {"kind": kind, "members": 20 if kind == "linear" else 10, "timed_s": total, "gather": 0.2, "forward": 0.4,
            "loss + gradient": 0.5, "backward": 0.3, "AdamW": adamw, "gemm_alone_s": gemm, "five_s": five,
            "twenty_s": twenty, "params": 664_380, "steps": 2100, "adamw_ns": 0.6, "adamw_cached_ns": 0.55,
            "adamw_kernel_s": 0.8}


def test_the_limits_paragraph_states_the_measured_ratios():
    steps = [_costs("linear", 1.8, 0.3, 0.25, 1.5, 5.4), _costs("mlp", 6.0, 2.0, 1.2, 6.0, 26.4)]
    text = bench_heads._limits(steps, {"linear": 0.2, "mlp": 2.0})
    assert "| linear | 20 | 1.80 | 0.20 | 0.40 | 0.50 | 0.30 | 0.25 | 0.15 | 0.30 | 5.40 | 6.00 |" in text
    assert "on all 664k parameters at once, takes 0.80 s for the 2,100 steps" in text
    assert "0.60 ns a parameter at that size and 0.55 ns on 16k" in text
    assert "kernel alone are 1.40× the model's FLOP bound (2.00 s" in text              # (2.0 + 0.8) / 2.0
    assert "leaves 0.20 s within 1.5× for everything else" in text                      # 3.0 - 2.0 - 0.8
    assert "which takes 2.80 s and would have to shrink 14.0-fold" in text             # 6.0 - 2.0 - 1.2
    assert "costs 5.0× its GEMMs" in text                                               # (1.8 - 0.3) / 0.3
    assert "took 0.90× the time of four stacks of 5 for the linear probe and 1.10× for the MLP" in text


def test_the_limits_paragraph_says_when_gemms_and_adamw_alone_pass_one_and_a_half_times_the_bound():
    steps = [_costs("linear", 1.8, 0.3, 0.25, 1.5, 5.4), _costs("mlp", 6.0, 2.0, 1.2, 6.0, 26.4)]
    text = bench_heads._limits(steps, {"linear": 0.2, "mlp": 1.8})
    assert "kernel alone are 1.56× the model's FLOP bound (1.80 s" in text              # (2.0 + 0.8) / 1.8
    assert "beyond 1.5× already, before everything else of the steps" in text
    assert "validation), which takes 2.80 s: within 1.5× is out of reach" in text
    assert "leaves" not in text and "shrink" not in text


def test_the_grid_floor_scales_each_heads_bound_by_its_gemm_and_adamw_ratio():
    steps = [_costs("linear", 1.8, 0.3, 0.25, 1.5, 5.4), _costs("mlp", 6.0, 2.0, 1.2, 6.0, 26.4)]
    one, bound = {"linear": 0.8, "mlp": 2.0}, {"linear": 1.0, "mlp": 10.0}
    text = bench_heads._grid_floor(steps, one, bound, {"load_s": 0.1, "finish_s": 0.4, "total_s": 30.0})
    assert "1.38× for the linear probe, 1.40× for the MLP" in text                    # (0.3 + 0.8) / 0.8, (2 + 0.8) / 2
    assert "is a floor of 15.9 s, 1.44× the grid's bound" in text                     # 1.375 + 14 + 0.5 over 11
    assert "within 1.5× (16.5 s) leaves 0.6 s for everything else of the grid's 21,000 steps" in text
    assert "which takes 14.1 s and would have to shrink 22.6-fold" in text            # 30 - 15.875 over 0.625
    beyond = bench_heads._grid_floor(steps, one, {"linear": 1.0, "mlp": 10.0}, {"load_s": 1, "finish_s": 2, "total_s": 30})
    assert "1.67× the grid's bound: within 1.5× is out of reach" in beyond and "leaves" not in beyond
