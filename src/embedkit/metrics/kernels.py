"""Compiled (numba) passes behind ``ranking.Ranked``: one pass down one finding's rows per block of replicates.

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
    b = wt.shape[1]
    u, t = np.zeros((n_slots + 1, b)), np.zeros((n_slots + 1, b))
    p, q = np.zeros((n_slots + 1, b)), np.zeros((n_slots + 1, b))
    run = np.zeros((n_slots + 1, b))                 # positive weight of the current tie run
    run_tp, ap, w = np.zeros(b), np.zeros(b), np.zeros(b)
    pending = False
    for j in range(n):
        i = n - 1 - j
        row = wt[cols[i]]
        for r in range(b):
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
    return u, t, p, q, ap


@njit(cache=True, nogil=True)
def permuted(cols, neg, end, tied, labels, k):
    """Each row weighing 1 in the group its patient carries in a replicate, ``labels`` (patients, b):
    U, T, P, N (k, b) of groups 0..k-1 (labels >= k belong to none). Each replicate adds to its own group's
    sums, so the cost does not grow with k (measured: 1.9 ns a row and replicate at k = 2 and 4, where
    adding to every group masked by its label took 1.8 and 2.5)."""
    n = cols.shape[0]
    b = labels.shape[1]
    u, t = np.zeros((k + 1, b)), np.zeros((k + 1, b))
    p, q = np.zeros((k + 1, b)), np.zeros((k + 1, b))
    run = np.zeros((k + 1, b))
    for j in range(n):
        i = n - 1 - j
        lab = labels[cols[i]]
        if neg[i]:
            for r in range(b):
                s = min(lab[r], k)
                u[s, r] += p[s, r]
                q[s, r] += 1.0
                if tied[i]:
                    t[s, r] += run[s, r]
        else:
            for r in range(b):
                s = min(lab[r], k)
                p[s, r] += 1.0
                if tied[i]:
                    run[s, r] += 1.0
        if end[i] and tied[i]:
            run[:, :] = 0.0
    return u[:k], t[:k], p[:k], q[:k]
