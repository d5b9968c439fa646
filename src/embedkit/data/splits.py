"""Patient-disjoint, stratified train/val/test split (7:1:2 by default).

Patients are dealt one at a time (largest first, seeded order) to the split whose
stratification cells most lack them, so every cell (e.g. class x sex x age band)
reaches every split and totals stay close to the target fractions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from embedkit.manifest import SPLITS

FRACTIONS = (0.7, 0.1, 0.2)


def patient_split(
    patients: Sequence[Hashable],
    cells: Sequence[Hashable],
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = FRACTIONS,
) -> list[str]:
    """Assign every row a split so no patient is in two splits; returns one split name per row."""
    return [SPLITS[k] for k in patient_parts(patients, cells, seed=seed, fractions=fractions)]


def patient_parts(
    patients: Sequence[Hashable],
    cells: Sequence[Hashable],
    *,
    seed: int = 0,
    fractions: Sequence[float],
) -> list[int]:
    """Deal patients into ``len(fractions)`` parts (a split or a fold) stratified by ``cells``;
    returns one part index per row, never one patient in two parts."""
    rows_of: dict[Hashable, list[int]] = defaultdict(list)
    for i, p in enumerate(patients):
        rows_of[p].append(i)
    cell_total = Counter(cells)
    frac = np.asarray(fractions, dtype=float)
    k_parts = len(frac)
    have = {s: Counter() for s in range(k_parts)}
    split_total = np.zeros(k_parts)

    rng = np.random.default_rng(seed)
    order = list(rows_of)
    rng.shuffle(order)
    order.sort(key=lambda p: -len(rows_of[p]))  # stable: big patients first, ties in seeded order

    assignment: dict[Hashable, int] = {}
    for p in order:
        mine = Counter(cells[i] for i in rows_of[p])
        scores = []
        for s in range(k_parts):
            # Deficit of this split in the patient's cells, relative to the cell's target;
            # an empty cell in a split that should get some counts extra so every cell is covered.
            deficit = 0.0
            for c, k in mine.items():
                target = frac[s] * cell_total[c]
                deficit += k * (target - have[s][c]) / max(target, 1e-9)
                if have[s][c] == 0 and target >= 0.5:
                    deficit += 1.0
            overall = (frac[s] * len(cells) - split_total[s]) / (frac[s] * len(cells))
            scores.append(deficit + 0.5 * overall)
        best = int(np.argmax(scores))
        assignment[p] = best
        have[best].update(mine)
        split_total[best] += len(rows_of[p])
    return [assignment[p] for p in patients]
