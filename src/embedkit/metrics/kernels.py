"""Compiled (numba) passes behind ``ranking.Ranked`` (one pass down one finding's rows per block of replicates)
and ``stats.PatientSums`` (a block of replicates' sums from the few nonzero per-patient sums).

A replicate's AUROC needs, at each negative row, the positive weight scoring above it — a running sum per
group, which numpy can only do as one cumulative sum per group and replicate. These loops keep every group's
running sums at once and vectorise over the block's replicates (columns), so a block of b replicates costs one
walk down the rows for all groups together. Rows come ordered by ``Ranked``: ascending score, in a tie
run the negatives first, so that walking down meets a run's positives before its negatives.

Per replicate and slot the passes return U (positive weight at or above each negative, times its weight,
summed; ties counted whole), T (the tied part of U: pairs scoring equal), P and N (positive and negative
weight); the Mann-Whitney U with ties counting half is U - T / 2. Sums of integer weights in float64 are
exact below 2**53.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def weighted(cols, neg, end, tied, slots, n_slots, wt):
    """Replicates as weight columns ``wt`` (patients, b): U, T, P, N (n_slots + 1, b), slot 0 all rows, and
    AP (b,) of all rows; ``slots`` (rows, A) each row's slot (1..n_slots) in each of A attributes."""
    n, A = slots.shape
    b = (wt.shape[1] + 3) // 4 * 4         # whole vectors: replicates padded with weight 0 (9 % faster at 35)
    u, t = np.zeros((n_slots + 1, b)), np.zeros((n_slots + 1, b))
    p, q = np.zeros((n_slots + 1, b)), np.zeros((n_slots + 1, b))
    run = np.zeros((n_slots + 1, b))                 # positive weight of the current tie run
    run_tp, ap, w = np.zeros(b), np.zeros(b), np.zeros(b)
    pending = False
    for j in range(n):
        i = n - 1 - j
        row = wt[cols[i]]
        for r in range(len(row)):
            w[r] = row[r]
        for a in range(A + 1):
            s = 0 if a == 0 else slots[i, a - 1]
            if neg[i]:
                for r in range(b):
                    u[s, r] += w[r] * p[s, r]
                    q[s, r] += w[r]
                if tied[i]:
                    for r in range(b):
                        t[s, r] += w[r] * run[s, r]
            else:
                for r in range(b):
                    p[s, r] += w[r]
                if tied[i]:
                    for r in range(b):
                        run[s, r] += w[r]
        if not neg[i]:
            pending = True
            for r in range(b):
                run_tp[r] += w[r]
        if end[i]:
            if pending:                              # the run's positives share its precision (sklearn's AP)
                for r in range(b):
                    ap[r] += run_tp[r] * p[0, r] / max(p[0, r] + q[0, r], 1.0)
                    run_tp[r] = 0.0
                pending = False
            if tied[i]:
                run[:, :] = 0.0
    m = wt.shape[1]
    return u[:, :m], t[:, :m], p[:, :m], q[:, :m], ap[:m]


@njit(cache=True, nogil=True)
def permuted(cols, neg, end, tied, labels, k):
    """Each row weighing 1 in the group its patient carries in a replicate, ``labels`` (patients, b):
    U, T, P, N (k, b) of groups 0..k-1 (labels >= k belong to none). Each replicate adds to its own group's
    sums, so the cost does not grow with k: the pass for many groups (``permuted_masked`` below for few). A
    (group, replicate)'s five sums sit side by side, one cache line, and the branches on the row's class and tie
    are taken once per row (scratch, 74,556 rows × 35 replicates: 3.5 ns a row and replicate against 7.4 with
    one (k + 1, b) array per sum)."""
    n = cols.shape[0]
    b = labels.shape[1]
    acc = np.zeros(((k + 1) * b, 5))              # per (group, replicate): U, T, P, N, the tie run's positives
    at = np.empty(b, np.int64)
    for j in range(n):
        i = n - 1 - j
        lab = labels[cols[i]]
        for r in range(b):
            at[r] = min(lab[r], k) * b + r
        if neg[i] and tied[i]:
            for r in range(b):
                a = acc[at[r]]
                a[0] += a[2]
                a[1] += a[4]
                a[3] += 1.0
        elif neg[i]:
            for r in range(b):
                a = acc[at[r]]
                a[0] += a[2]
                a[3] += 1.0
        elif tied[i]:
            for r in range(b):
                a = acc[at[r]]
                a[2] += 1.0
                a[4] += 1.0
        else:
            for r in range(b):
                acc[at[r], 2] += 1.0
        if end[i] and tied[i]:
            acc[:, 4] = 0.0
    sums = acc[:k * b].reshape(k, b, 5)
    return sums[..., 0].copy(), sums[..., 1].copy(), sums[..., 2].copy(), sums[..., 3].copy()


@njit(cache=True, nogil=True)
def permuted_masked(cols, neg, end, tied, labels, k, groups):
    """``permuted``'s sums of the groups ``groups`` alone (the others left 0), each group's added under a mask
    of the replicates whose label it is: integer sums over whole vectors of replicates, so they vectorise, at a
    cost that grows with the groups (74,556 rows × 35 replicates: 3.4 ms a finding at 2 groups, 5.3 at 4, 6.4 at
    5, 7.3 at 6, against 7.1 for ``permuted`` at any k). ``groups`` must have the labels' dtype: compared as
    another type, the masks fall back to narrower vectors (4.3 ms at 2 groups)."""
    n = cols.shape[0]
    b = labels.shape[1]
    width = (b + 7) // 8 * 8                         # whole vectors of int32; padded replicates carry no group
    u, t = np.zeros((k, width), np.int64), np.zeros((k, width), np.int64)
    p, q, run = np.zeros((k, width), np.int32), np.zeros((k, width), np.int32), np.zeros((k, width), np.int32)
    lab = np.full(width, k, labels.dtype)
    in_run = False                                   # positives seen in the current tie run
    for j in range(n):
        i = n - 1 - j
        row = labels[cols[i]]
        for r in range(b):
            lab[r] = row[r]
        if neg[i]:
            for g in groups:
                ug, pg, qg = u[g], p[g], q[g]
                for r in range(width):
                    m = np.int32(lab[r] == g)
                    ug[r] += np.int64(pg[r] * m)
                    qg[r] += m
            if tied[i]:
                for g in groups:
                    tg, rg = t[g], run[g]
                    for r in range(width):
                        tg[r] += np.int64(rg[r] * np.int32(lab[r] == g))
        else:
            for g in groups:
                pg = p[g]
                for r in range(width):
                    pg[r] += np.int32(lab[r] == g)
            if tied[i]:
                in_run = True
                for g in groups:
                    rg = run[g]
                    for r in range(width):
                        rg[r] += np.int32(lab[r] == g)
        if end[i] and tied[i] and in_run:
            run[:, :] = 0
            in_run = False
    return (u[:, :b].astype(np.float64), t[:, :b].astype(np.float64), p[:, :b].astype(np.float64),
            q[:, :b].astype(np.float64))


@njit(cache=True, nogil=True)
def patient_weighted(patient, col, val, counts, n_cols):
    """Per-patient sums kept as entries (patient, col, val): (n_cols, b) sums of replicates that draw each
    patient ``counts`` (patients, b) times, vectorised over the replicates."""
    b = counts.shape[1]
    out = np.zeros((n_cols, b))
    for z in range(patient.shape[0]):
        row, o, v = counts[patient[z]], out[col[z]], val[z]
        for r in range(b):
            o[r] += row[r] * v
    return out


@njit(cache=True, nogil=True)
def patient_grouped(patient, col, val, labels, n_cols, k, groups):
    """The same entries summed per group: (k * n_cols, b), each patient's in the group ``labels`` (patients, b)
    gives it in each replicate; only the codes in ``groups`` are summed, the other groups left 0."""
    b = labels.shape[1]
    out = np.zeros((k * n_cols, b))
    for z in range(patient.shape[0]):
        lab, c, v = labels[patient[z]], col[z], val[z]
        for g in groups:                    # every group masked: vectorises, where a scatter per replicate did not
            o = out[g * n_cols + c]
            for r in range(b):
                o[r] += v * (lab[r] == g)
    return out


def permute_within(out: np.ndarray, members: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> None:
    """Shuffle each row of ``out`` (b, P) in place within each stratum — the columns ``members[bounds[s]:
    bounds[s + 1]]`` — with numpy's own draws: the draws and the generator's state after are those of
    ``rng.permuted(out[:, m], axis=1)`` stratum by stratum (Fisher-Yates from the last position, numpy's
    ``random_interval``), read from the bit generator through numpy's public ctypes interface."""
    bits = rng.bit_generator
    with bits.lock:
        _shuffle_within(out, members, bounds, bits.ctypes.next_uint32, bits.ctypes.state_address)


@njit(cache=True, nogil=True)
def _shuffle_within(out, members, bounds, next_uint32, state):
    for s in range(len(bounds) - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        for r in range(out.shape[0]):
            row = out[r]
            for i in range(size - 1, 0, -1):
                j = members[lo + _interval(next_uint32, state, i)]
                row[members[lo + i]], row[j] = row[j], row[members[lo + i]]


@njit(cache=True, nogil=True)
def _interval(next_uint32, state, high):
    """numpy's ``random_interval`` below 2**32: a uniform integer in [0, high], masked 32-bit draws rejected
    above ``high``."""
    mask = high
    for shift in (1, 2, 4, 8, 16):
        mask |= mask >> shift
    while True:
        value = next_uint32(state) & mask
        if value <= high:
            return value
