"""Resampling at the unit of independence: the patient.

Images of one patient are not independent, so the bootstrap resamples *patients* (a cluster bootstrap)
and the permutation null moves *a patient's* group label (all of the patient's images together). The
design depends on the rows' patients and classes alone — never on which attributes are declared — so
declaring another attribute changes no other number:

- strata: a patient's class when all its images share one, else one "mixed" stratum; the bootstrap draws
  patients with replacement inside each stratum, the permutation shuffles labels inside each stratum;
- a patient's group under permutation is the group most of its images have (ties: the first seen);
- without patient ids every image is its own patient, and a table whose patients each have one image
  draws exactly the same numbers (same seed) as that image-level design.

Statistics are sums over rows, so a replicate is ``counts (B, P) @ per-patient statistics (P, K)`` (done as
a compiled pass over the few nonzero per-patient sums where they are sparse, ``stats.PatientSums``): the
cost grows with B x P in blocks of ``BLOCK`` elements, never with a B x N index matrix. The draws are the
index draws of the classic form (``rng.integers`` per stratum), turned into counts, so the index form on
the same draws gives the same numbers (tested); the permutations are ``Generator.permuted``'s own draws,
made by a compiled loop (``kernels.permute_within``, tested against numpy).
"""

from __future__ import annotations

import os
from collections import deque
from itertools import chain, islice
from typing import Callable, Iterable, Iterator

import numpy as np

BLOCK = 1 << 20      # elements of one block of (replicates x patients) counts: 8 MiB of float64 (measured: 4x larger is no faster)
AUTO_MAX = 8         # blocks at once by default: a core each, at most this many (each holds ~40 MB at 30,000 patients)


def map_blocks(fn: Callable, blocks: Iterable, threads: int | None = None) -> list:
    """``[fn(block) for block in blocks]``, with ``threads`` > 1 running up to that many blocks at once (the
    compiled passes and numpy's products release the GIL); None: one block per core (up to ``AUTO_MAX``) when
    there are several blocks, else one thread. The caller's generator still draws the blocks one after another,
    so the numbers do not depend on the thread count, and at most threads + 1 blocks are held. BLAS runs on one
    thread meanwhile: OpenBLAS's own threads spin-wait against the blocks' (measured at 74,556 rows: 27 s with
    two BLAS threads under two blocks, 18 s with one, 27 s for one block at a time). RuntimeWarnings are ignored
    meanwhile, as ``suite.quiet`` ignores them within a block: warnings' filters are global, and blocks whose
    ``quiet`` sections overlap restore each other's saved filters, so without this one block could warn in the
    middle of another's section, and the last to leave could keep its filter."""
    blocks = iter(blocks)
    first = list(islice(blocks, 2))                  # one block (small data): no pool to start
    if threads is None:
        threads = min(cores(), AUTO_MAX) if len(first) > 1 else 1
    blocks = chain(first, blocks)
    if threads <= 1:
        return [fn(block) for block in blocks]
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    out, pending = [], deque()
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        warnings.simplefilter("ignore", RuntimeWarning)
        for block in blocks:
            pending.append(pool.submit(fn, block))
            if len(pending) > threads:
                out.append(pending.popleft().result())
        out += [f.result() for f in pending]
    return out


def cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it, else the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def first_seen_codes(values) -> tuple[np.ndarray, int]:
    """(code per row, number of codes), codes numbered in order of first appearance."""
    _, first, inverse = np.unique(np.asarray(values).astype(str), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()], len(first)


class Clusters:
    """The rows' patients and the strata they are resampled and permuted within."""

    def __init__(self, patient_id, y_true: np.ndarray, n_classes: int):
        y_true = np.asarray(y_true, dtype=np.int64)
        if patient_id is None:
            self.patient, self.n = np.arange(len(y_true)), len(y_true)
        else:
            self.patient, self.n = first_seen_codes(patient_id)
        lo = np.full(self.n, n_classes, dtype=np.int64)
        hi = np.full(self.n, -1, dtype=np.int64)
        np.minimum.at(lo, self.patient, y_true)
        np.maximum.at(hi, self.patient, y_true)
        self.stratum = np.where(lo == hi, lo, n_classes)        # one class, or "mixed"
        self.members = [np.flatnonzero(self.stratum == s) for s in np.unique(self.stratum)]
        self.clustered = self.n < len(y_true)

    def block_size(self, n_rep: int) -> int:
        return max(1, min(n_rep, BLOCK // max(self.n, 1)))

    def bootstrap_counts(self, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """(b, P) times each patient is drawn, block by block; strata keep their patient counts."""
        step = self.block_size(n_boot)
        for start in range(0, n_boot, step):
            b = min(step, n_boot - start)
            offset = (np.arange(b) * self.n)[:, None]
            drawn = [(members[rng.integers(0, len(members), (b, len(members)))] + offset).ravel()
                     for members in self.members]
            yield np.bincount(np.concatenate(drawn), minlength=b * self.n).reshape(b, self.n).astype(np.float64)

    def patient_labels(self, codes: np.ndarray, n_codes: int) -> np.ndarray:
        """(P,) each patient's group: the code most of its images have (ties: the lowest code)."""
        tally = np.zeros((self.n, n_codes), dtype=np.int64)
        np.add.at(tally, (self.patient, codes), 1)
        return tally.argmax(1)

    def permuted_labels(self, labels: np.ndarray, n_perm: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """(b, P) patient labels shuffled within each stratum, block by block: the draws of
        ``rng.permuted(block[:, members], axis=1)`` stratum by stratum, made by a compiled loop."""
        from embedkit.metrics import kernels

        step = self.block_size(n_perm)
        labels = labels.astype(np.uint8) if labels.max(initial=0) < 256 else labels       # the same draws, less to move
        members = np.concatenate(self.members)
        bounds = np.cumsum([0] + [len(m) for m in self.members])
        for start in range(0, n_perm, step):
            out = np.tile(labels, (min(step, n_perm - start), 1))
            kernels.permute_within(out, members, bounds, rng)
            yield out

