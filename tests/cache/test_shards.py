"""Sharded extraction: --shard i/n and torchrun ranks fill their blocks; the last one assembles the
same file a single process writes, bit for bit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from embedkit.cache import read_cache
from embedkit.cache.extract import ExtractConfig, extract, shard_chunks


def cfg(manifest, cache_dir, shard=None):
    return ExtractConfig(manifest=manifest, models=("clip-tiny", "medclip-rn50-tiny"), cache_dir=cache_dir,
                         rows_per_chunk=20, batch_size=8, workers=0, shard=shard)


@pytest.fixture(scope="module")
def single(phantom_dir, tmp_path_factory):
    return [read_cache(r.path) for r in extract(cfg(phantom_dir / "manifest.csv", tmp_path_factory.mktemp("single")))]


def assert_same(results, single):
    for r, ref in zip(results, single):
        got = read_cache(r.path)
        np.testing.assert_array_equal(got.embeddings, ref.embeddings)
        assert (got.image_id == ref.image_id).all() and r.path.name == ref.path.name


def test_uneven_shards_without_torchrun(phantom_dir, tmp_path, single):
    assert [len(shard_chunks(10, (i, 3))) for i in range(3)] == [3, 3, 4]  # 192 rows / 20 = 10 chunks
    manifest = phantom_dir / "manifest.csv"
    first = extract(cfg(manifest, tmp_path, (2, 3)))
    assert not any(r.joined for r in first) and first[0].n == 72 and not list(tmp_path.glob("*.h5"))
    assert not any(r.joined for r in extract(cfg(manifest, tmp_path, (0, 3))))
    last = extract(cfg(manifest, tmp_path, (1, 3)))
    assert all(r.joined for r in last)
    assert_same(last, single)
    assert not list(tmp_path.glob("*.parts"))


KILL = textwrap.dedent("""
    import os, signal, sys
    from embedkit.cache.extract import ExtractConfig, extract
    def progress(done, total):
        if done >= 40:
            os.kill(os.getpid(), signal.SIGKILL)
    extract(ExtractConfig(manifest=sys.argv[1], models=("clip-tiny", "medclip-rn50-tiny"), cache_dir=sys.argv[2],
                          rows_per_chunk=20, batch_size=8, workers=0, shard=(0, 2)), on_progress=progress)
""")


def test_a_killed_rank_restarted_alone_finishes(phantom_dir, tmp_path, single):
    manifest = phantom_dir / "manifest.csv"
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    dead = subprocess.run([sys.executable, str(script), str(manifest), str(tmp_path / "c")], capture_output=True)
    assert dead.returncode == -9, dead.stderr.decode()[-1500:]
    other = extract(cfg(manifest, tmp_path / "c", (1, 2)))
    assert not any(r.joined for r in other)  # rank 0 is not finished: nobody assembles yet
    restarted = extract(cfg(manifest, tmp_path / "c", (0, 2)))
    assert all(r.joined for r in restarted)
    assert_same(restarted, single)


def test_torchrun_two_ranks_equal_one_process(phantom_dir, tmp_path, single):
    import os

    import torch

    manifest = phantom_dir / "manifest.csv"
    # CPU kernels reduce in an order that depends on the thread count; torchrun would set 1 thread
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "embedkit", "extract", "--model", "clip-tiny,medclip-rn50-tiny", "--manifest", str(manifest),
                          "--cache-dir", str(tmp_path), "--batch-size", "8", "--workers", "0", "--quiet"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "shard done" in run.stdout and "N=192" in run.stdout
    files = sorted(tmp_path.glob("*.h5"))
    assert len(files) == 2
    for f, ref in zip(sorted(files), sorted(single, key=lambda c: c.path.name)):
        got = read_cache(f)
        assert f.name == ref.path.name
        np.testing.assert_array_equal(got.embeddings, ref.embeddings)
