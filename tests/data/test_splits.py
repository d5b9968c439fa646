from collections import Counter

from embedkit.data.splits import patient_split


def test_patient_disjoint_stratified_and_close_to_7_1_2():
    patients, cells = [], []
    pid = 0
    for cell in range(24):  # 24 cells of 50 images, patients with 1-3 images
        n = 0
        while n < 50:
            k = min(1 + pid % 3, 50 - n)
            patients += [f"p{pid}"] * k
            cells += [cell] * k
            n += k
            pid += 1
    splits = patient_split(patients, cells, seed=0)
    by_patient = {}
    for p, s in zip(patients, splits):
        assert by_patient.setdefault(p, s) == s
    totals = Counter(splits)
    assert abs(totals["train"] - 840) <= 12 and abs(totals["val"] - 120) <= 12 and abs(totals["test"] - 240) <= 12
    for cell in range(24):
        per = Counter(s for s, c in zip(splits, cells) if c == cell)
        assert set(per) == {"train", "val", "test"}
    assert splits == patient_split(patients, cells, seed=0)
    assert splits != patient_split(patients, cells, seed=1)
