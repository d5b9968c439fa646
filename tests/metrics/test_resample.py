"""Statistics at the unit of independence: patient-level bootstrap and permutation, class-only strata,
intervals that contain their estimate, and the block-wise counts against the classic index form."""

import numpy as np
import pytest

from embedkit.metrics import evaluate, stats
from embedkit.metrics.intervals import interval
from embedkit.metrics.resample import Clusters

C = 6
CLASSES = tuple("ABCDEF")


def _data(n=240, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n // C)
    logits = rng.normal(size=(len(y), C))
    logits[np.arange(len(y)), y] += signal
    p = np.exp(logits)
    groups = {"sex": rng.choice(["M", "F"], len(y)), "age": rng.choice(["<40", "40-60", "60-80", ">=80"], len(y)),
              "race": rng.choice(["A", "B", "C", "D", "E"], len(y)), "site": rng.choice(["s1", "s2", "s3"], len(y))}
    return y, p / p.sum(1, keepdims=True), groups


def _width(r, *path):
    node = r["ci"]
    for p in path:
        node = node[p]
    return node[1] - node[0]


def test_declaring_more_attributes_changes_no_interval():
    y, p, g = _data()
    one = evaluate(y, p, groups={"age": g["age"]}, classes=CLASSES, n_boot=400, n_perm=50, seed=3)
    many = evaluate(y, p, groups=g | {"sex*race": np.char.add(g["sex"], g["race"])}, classes=CLASSES, n_boot=400,
                    n_perm=50, seed=3)
    for path in [("accuracy",), ("f1_macro",), ("groups", "age", "40-60", "f1_macro"), ("fairness", "age", "f1_gap")]:
        assert _width(one, *path) == pytest.approx(_width(many, *path))     # the same draws: identical, not just close
        assert _width(one, *path) > 0.02


def test_no_interval_excludes_its_estimate():
    y, p, g = _data(signal=0.3)
    r = evaluate(y, p, groups=g, classes=CLASSES, n_boot=200, n_perm=20)
    checked = 0
    for attr, gaps in r["fairness"].items():
        for gap, v in gaps.items():
            lo, hi = r["ci"]["fairness"][attr][gap]
            if v is not None:
                assert lo <= v <= hi, (attr, gap, v, lo, hi)
                checked += 1
    assert checked >= 12


def test_one_image_per_patient_draws_as_image_level():
    y, p, g = _data()
    a = evaluate(y, p, groups=g, classes=CLASSES, n_boot=100, n_perm=100, seed=5, return_replicates=True)
    b = evaluate(y, p, groups=g, classes=CLASSES, n_boot=100, n_perm=100, seed=5, return_replicates=True,
                 patient_id=np.array([f"p{i:04d}" for i in range(len(y))]))
    for k in a["_replicates"]:
        np.testing.assert_array_equal(a["_replicates"][k], b["_replicates"][k])
    assert a["p_value"] == b["p_value"] and a["null"] == b["null"]
    assert b["settings"]["resampling"]["unit"] == "patient"


def test_duplicated_images_leave_a_patient_level_interval_unchanged():
    y, p, g = _data(seed=1)
    patients = np.arange(len(y)).astype(str)
    y2, p2 = np.concatenate([y, y]), np.concatenate([p, p])
    g2 = {k: np.concatenate([v, v]) for k, v in g.items()}
    base = evaluate(y, p, groups=g, classes=CLASSES, n_boot=1000, n_perm=200, patient_id=patients)
    image = evaluate(y2, p2, groups=g2, classes=CLASSES, n_boot=1000, n_perm=200)
    patient = evaluate(y2, p2, groups=g2, classes=CLASSES, n_boot=1000, n_perm=200,
                       patient_id=np.concatenate([patients, patients]))
    for path in [("accuracy",), ("fairness", "sex", "f1_gap")]:
        assert _width(patient, *path) == pytest.approx(_width(base, *path), rel=0.15)
        assert _width(image, *path) < 0.8 * _width(base, *path)     # images as independent: too narrow
    # the image-level null also narrows, so its p-value shrinks; the patient-level one stays
    assert patient["null"]["sex"]["f1_gap"] == pytest.approx(base["null"]["sex"]["f1_gap"], rel=0.2)


def test_counts_equal_the_index_form_on_the_same_draws():
    """Block-wise counts x per-patient statistics equal the classic (B, N) index form of the same draws."""
    y, p, g = _data(n=60)
    pred, codes = p.argmax(1), (g["sex"] == "F").astype(np.int64)
    clusters = Clusters(None, y, C)
    counts = np.concatenate(list(clusters.bootstrap_counts(7, np.random.default_rng(0))))
    rng = np.random.default_rng(0)
    parts = [m[rng.integers(0, len(m), (7, len(m)))] for m in clusters.members]
    index = np.concatenate(parts, axis=1)
    classic = stats.confusion(y[index], pred[index], codes[index], n_classes=C, n_cells=2)
    r = evaluate(y, p, groups={"sex": g["sex"]}, order={"sex": ("M", "F")}, classes=CLASSES, n_boot=7, n_perm=1,
                 return_replicates=True)
    acc_classic = np.trace(classic.sum(1), axis1=-2, axis2=-1) / index.shape[1]
    np.testing.assert_allclose(r["_replicates"]["accuracy"], acc_classic)
    assert counts.sum(1).tolist() == [60] * 7


def test_patients_spanning_classes_share_one_stratum():
    y = np.array([0, 0, 1, 1, 2, 2])
    clusters = Clusters(np.array(["a", "a", "b", "c", "c", "d"]), y, 3)
    assert clusters.n == 4 and clusters.stratum.tolist() == [0, 1, 3, 2]
    assert clusters.patient_labels(np.array([0, 1, 1, 1, 0, 0]), 2).tolist() == [0, 1, 0, 0]   # tie: lowest


def test_threads_change_no_number(monkeypatch):
    """Blocks run two at a time (or a core each, the default) give the same numbers, replicates in the same order,
    as one after another."""
    from embedkit.metrics.findings import evaluate_findings

    monkeypatch.setattr("embedkit.metrics.resample.BLOCK", 120 * 7)          # 120 patients: blocks of 7 replicates
    monkeypatch.setattr("embedkit.metrics.resample.cores", lambda: 2)
    y, p, groups = _data()
    patients = np.arange(len(y)) // 2
    truth = (p[:, :3] > 0.2).astype(float)
    for run in (lambda t: evaluate(y, p, groups=groups, classes=CLASSES, patient_id=patients, n_boot=40, n_perm=40,
                                   return_replicates=True, threads=t),
                lambda t: evaluate_findings(truth, p[:, :3], findings=("a", "b", "c"), thresholds=[0.3] * 3,
                                            groups=groups, patient_id=patients, n_boot=40, n_perm=40,
                                            return_replicates=True, threads=t)):
        one = run(1)
        reps = one.pop("_replicates")
        for other in (run(2), run(None)):
            others = other.pop("_replicates")
            assert other == one and others.keys() == reps.keys()
            assert all(np.array_equal(reps[k], others[k], equal_nan=True) for k in reps)


@pytest.mark.parametrize("method", ["basic", "percentile", "bc"])
def test_interval_contains_estimate_and_respects_bounds(method):
    reps = np.random.default_rng(0).normal(0.3, 0.05, 500)
    lo, hi = interval(reps, 0.02, method=method, bounds=(0.0, 1.0))
    assert 0.0 <= lo <= 0.02 <= hi <= 1.0
    lo, hi = interval(np.abs(np.random.default_rng(1).normal(0, 0.05, 500)), 0.01, method="basic", bounds=(0.0, 1.0))
    assert lo == 0.0          # a null |gap|: the basic interval reaches 0


def test_bh_and_holm_equal_a_hand_computation():
    from embedkit.metrics.intervals import adjust

    p = [0.01, 0.04, None, 0.03, 0.20]
    # BH, m = 4: sorted 0.01, 0.03, 0.04, 0.20 -> 0.04, 0.06, 0.0533, 0.20 -> step-up minima 0.04, 0.0533, 0.0533, 0.20
    assert adjust(p, "bh") == pytest.approx([0.04, 0.16 / 3, None, 0.16 / 3, 0.20])
    # Holm: 4 x 0.01, 3 x 0.03, 2 x 0.04, 1 x 0.20 -> running max 0.04, 0.09, 0.09, 0.20
    assert adjust(p, "holm") == pytest.approx([0.04, 0.09, None, 0.09, 0.20])
    assert adjust([None, None]) == [None, None]


def test_a_k_group_gap_with_one_group_left_out_names_the_two_compared():
    y, p, g = _data()
    site = np.where(np.arange(len(y)) < 5, "tiny", np.where(np.arange(len(y)) % 2, "s1", "s2"))
    r = evaluate(y, p, groups={"site": site}, order={"site": ("tiny", "s1", "s2")}, classes=CLASSES, n_boot=10, n_perm=10)
    assert r["settings"]["attributes"]["site"]["sign"] == "s1 - s2"


def _generator(bits: str, warm: int) -> np.random.Generator:
    """A generator of ``bits`` after ``warm`` 32-bit draws: an odd count leaves numpy's upper half buffered."""
    rng = np.random.Generator(getattr(np.random, bits)(7))
    rng.integers(0, 1000, warm, dtype=np.uint32)
    return rng


@pytest.mark.parametrize("n_codes,bits,warm", [(3, "PCG64", 0), (300, "PCG64", 0), (3, "PCG64", 3), (3, "Philox", 1)])
def test_permuted_labels_are_numpys_own_draws(n_codes, bits, warm):
    """The compiled shuffle draws what ``Generator.permuted`` draws, stratum by stratum (uint8 and wider labels,
    a one-patient stratum, a half draw buffered before it, another bit generator), and leaves the generator where
    numpy would: every published p-value stands."""
    rng = np.random.default_rng(3)
    y = np.r_[np.repeat(np.arange(4), [40, 25, 1, 34]), [0, 1]]
    patients = np.r_[np.arange(100), [0, 30]]                      # patients 0 and 30 span classes: mixed stratum
    clusters = Clusters(patients, y, 4)
    labels = rng.integers(0, n_codes, clusters.n)
    got = np.concatenate(list(clusters.permuted_labels(labels, 9, _generator(bits, warm))))
    numpy_rng = _generator(bits, warm)
    assert bits != "PCG64" or numpy_rng.bit_generator.state["has_uint32"] == warm % 2
    expected = np.tile(labels, (9, 1))
    for members in clusters.members:
        part = expected[:, members]
        numpy_rng.permuted(part, axis=1, out=part)
        expected[:, members] = part
    assert np.array_equal(got, expected) and not np.array_equal(got[0], labels)
    mine = _generator(bits, warm)
    list(clusters.permuted_labels(labels, 9, mine))
    assert bits != "PCG64" or mine.bit_generator.state == numpy_rng.bit_generator.state
    assert np.array_equal(mine.integers(0, 1000, 5, dtype=np.uint32), numpy_rng.integers(0, 1000, 5, dtype=np.uint32))


def test_patient_sums_equal_the_dense_products():
    """Replicates' sums from the nonzero per-patient entries equal counts @ the dense per-patient sums, and
    per group the one-hot products, values summed where a patient's rows share a cell (only the groups asked
    for, the others 0)."""
    rng = np.random.default_rng(0)
    patient, col = rng.integers(0, 30, 200), rng.integers(0, 6, 200)
    values = rng.normal(size=(200, 2))
    sums = stats.PatientSums(patient, col, values, 12)
    dense = np.zeros((30, 12))
    np.add.at(dense, (patient, 2 * col), values[:, 0])
    np.add.at(dense, (patient, 2 * col + 1), values[:, 1])
    counts = rng.integers(0, 3, (5, 30)).astype(float)
    np.testing.assert_allclose(sums.weighted(np.ascontiguousarray(counts.T)).T, counts @ dense, rtol=1e-12)
    labels = rng.integers(0, 3, (5, 30)).astype(np.uint8)
    grouped = sums.grouped(np.ascontiguousarray(labels.T), 3).T.reshape(5, 3, 12)
    for g in range(3):
        np.testing.assert_allclose(grouped[:, g], (labels == g) @ dense, rtol=1e-12, atol=1e-12)
    some = sums.grouped(np.ascontiguousarray(labels.T), 3, [0, 2]).T.reshape(5, 3, 12)   # the groups a gap compares
    assert np.array_equal(some[:, [0, 2]], grouped[:, [0, 2]]) and not some[:, 1].any()


def test_by_default_blocks_take_a_core_each_only_where_there_are_several(monkeypatch):
    """threads=None: one block (small data) runs on the caller's thread, no pool started; several run on a pool
    of one thread per core, and on the caller's thread where there is one core; the results keep their order."""
    import threading

    from embedkit.metrics.resample import map_blocks

    caller = threading.get_ident()

    def where(block):
        return block, threading.get_ident() != caller

    monkeypatch.setattr("embedkit.metrics.resample.cores", lambda: 2)
    assert map_blocks(where, iter([])) == [] and map_blocks(where, iter([7])) == [(7, False)]
    assert map_blocks(where, iter(range(5))) == [(b, True) for b in range(5)]
    monkeypatch.setattr("embedkit.metrics.resample.cores", lambda: 1)
    assert map_blocks(where, iter(range(5))) == [(b, False) for b in range(5)]


def test_overlapping_quiet_blocks_in_threads_neither_warn_nor_leave_a_filter():
    """Two blocks whose quiet sections overlap, the first leaving first: the second's silenced warning stays
    silent, and the warnings' filters are as they were after (each section restores the global filters it saved)."""
    import threading
    import warnings

    from embedkit.metrics.resample import map_blocks
    from embedkit.metrics.suite import quiet

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def overlapping(i):
        if i == 0:
            with quiet():
                first_in.set()
                assert second_in.wait(5)
            first_out.set()
        else:
            assert first_in.wait(5)
            with quiet():
                second_in.set()
                assert first_out.wait(5)
                np.nanmean(np.full(3, np.nan))                   # "Mean of empty slice", meant to be silenced

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        map_blocks(overlapping, [0, 1], threads=2)
        after = list(warnings.filters)
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)] and after == before
