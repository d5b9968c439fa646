"""The audit: AUC against scikit-learn, duplicates found, the phantom's planted attributes and leakage."""

import re

import numpy as np
import pytest

from embedkit.metrics.auc import balanced_accuracy, binary_auc, macro_ovr_auc


def test_auc_and_balanced_accuracy_equal_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # ties included
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    y3, p3 = rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    assert macro_ovr_auc(y3, p3) == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    assert balanced_accuracy(y3, p3.argmax(1)) == pytest.approx(balanced_accuracy_score(y3, p3.argmax(1)))
    assert np.isnan(binary_auc(np.ones(5), np.arange(5)))
    # the permutation null reads ranks computed once: the same AUC as sorting again for each shuffle
    from embedkit.metrics.auc import ranked_macro_ovr_auc, score_ranks

    p2 = np.c_[1 - s, s]
    tied = np.round(p3, 2)
    for labels, proba in ((y, p2), (y3, tied / tied.sum(1, keepdims=True))):
        ranks = score_ranks(proba)
        for _ in range(3):
            shuffled = rng.permutation(labels)
            assert ranked_macro_ovr_auc(shuffled, ranks) == macro_ovr_auc(shuffled, proba) == pytest.approx(
                roc_auc_score(shuffled, proba[:, 1] if proba.shape[1] == 2 else proba, multi_class="ovr"))


def test_near_and_exact_duplicates_across_splits(tmp_path):
    from embedkit.audit.duplicates import find
    from embedkit.cache import read_cache
    from embedkit.cache.join import join
    from embedkit.manifest import read_manifest
    from tests.heads.conftest import make_cache

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 32)).astype(np.float32)
    x[7] = x[3] + 0.001 * rng.normal(size=32)  # a near copy of row 3
    y = np.arange(120) % 3
    split = np.array(["train", "val", "test"] * 40)
    path = make_cache(tmp_path / "s.h5", x, y, split)
    # an exact copy: row 10's file under a second id (same bytes, other split)
    m = read_manifest(path.with_suffix(".csv"))
    rows = m.rows + [dict(m.rows[10], image_id="copy", patient_id="p-copy", split="test")]
    from embedkit.manifest import write_manifest

    write_manifest(tmp_path / "m2.csv", rows)
    m2 = read_manifest(tmp_path / "m2.csv")
    store = read_cache(path)
    d = find(join(store, m2), m2)
    kinds = {(p["kind"], frozenset((p["image_a"], p["image_b"]))) for p in d.pairs}
    assert ("exact", frozenset(("i10", "copy"))) in kinds and ("near", frozenset(("i3", "i7"))) in kinds
    assert d.calibrated and 0.0 < d.threshold < 0.9 and len(d.pairs) == 2      # a distance-ratio bound
    s = d.summary()
    # row 10 is in val and its copy in test; rows 3 and 7 are in train and val
    assert s["exact"] == 1 and s["near"] == 1 and s["leaks"] == 2
    assert s["per_split_pair"] == {"test/val": 1, "train/val": 1} and s["across_patients"] == 2


def _clustered(rng, n: int, d: int = 64, copies: int = 20):
    """Rows on a low-dimensional manifold (like an encoder's embeddings) with ``copies`` near copies planted."""
    x = (rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    originals = rng.choice(n - copies, copies, replace=False)
    x[n - copies:] = x[originals] + 0.01 * rng.normal(size=(copies, d))
    return x, {frozenset((int(a), n - copies + i)) for i, a in enumerate(originals)}


def test_normalised_rows_take_one_copy_of_memory_and_equal_the_whole_array_form():
    import tracemalloc

    from embedkit.audit.duplicates import normalised

    x = np.random.default_rng(1).normal(size=(20_001, 64)).astype(np.float32)
    whole = x - x.mean(0, dtype=np.float64).astype(np.float32)
    whole /= np.linalg.norm(whole, axis=1, keepdims=True).clip(1e-12)
    tracemalloc.start()
    z = normalised(x, chunk=1_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(z, whole)                                   # bitwise: the norms are per row either way
    assert peak < 1.2 * x.nbytes                                      # the copy and a chunk, not a second copy


def test_the_radius_scan_flags_what_brute_force_flags_and_finds_the_planted_near_copies():
    from embedkit.audit.duplicates import near_by_ratio, normalised

    x, planted = _clustered(np.random.default_rng(3), 30_000)
    z = normalised(x)
    scanned, brute = near_by_ratio(z, brute=False), near_by_ratio(z, brute=True)
    assert {frozenset((int(a), int(b))) for a, b, _ in scanned.pairs} == planted      # and nothing else
    assert sorted((int(a), int(b)) for a, b, _ in scanned.pairs) == sorted((int(a), int(b)) for a, b, _ in brute.pairs)
    assert scanned.dimension == pytest.approx(brute.dimension, rel=0.1)   # estimated on 2,000 of the rows
    assert "checked in full; intrinsic dimension from 2,000 sampled rows" in scanned.search


def test_a_cosine_threshold_lists_the_same_pairs_either_way():
    """Up to K per row, nearest first: rows in tight clusters of 8 have 7 within the threshold."""
    from embedkit.audit.duplicates import K, near_by_cosine, normalised

    rng = np.random.default_rng(10)
    centres = rng.normal(size=(300, 64))
    z = normalised(np.repeat(centres, 8, axis=0) + 0.2 * rng.normal(size=(2_400, 64)))   # cosines ~0.96 apart
    scanned, brute = near_by_cosine(z, 0.9, brute=False), near_by_cosine(z, 0.9, brute=True)
    as_set = lambda near: {(int(a), int(b)) for a, b, _ in near.pairs}           # noqa: E731
    assert as_set(scanned) == as_set(brute) and len(brute.pairs) == K * len(z)


def test_too_few_distinct_images_for_the_ratio_test_say_so():
    from embedkit.audit.duplicates import Duplicates

    s = Duplicates(1.0, True).summary()                    # what find returns below 3 distinct images
    assert s["near_when"] == "no distance-ratio test (fewer than 3 distinct images)" and s["near"] == 0


def test_the_ratio_bound_follows_the_two_nearest_neighbour_law():
    """Without copies ratio^m is uniform: m is recovered from the median and the bound is (alpha / n)^(1/m)."""
    from embedkit.audit.duplicates import ratio_bound

    ratios = np.random.default_rng(0).uniform(size=200_000) ** (1 / 12)
    bound, m = ratio_bound(ratios)
    assert m == pytest.approx(12, rel=0.02) and bound == pytest.approx((0.05 / 200_000) ** (1 / m), rel=1e-12)
    assert ratio_bound(ratios, tested=10)[0] == pytest.approx((0.05 / 10) ** (1 / m), rel=1e-12)   # a sample's family
    assert ratio_bound(np.ones(5)) == (0.0, float("inf"))                  # all equidistant: only R = 0 is a copy


def test_data_without_copies_flags_almost_nothing_where_a_six_sigma_rule_flagged_half_a_percent():
    from embedkit.audit.duplicates import distance_ratio, normalised, ratio_bound
    from embedkit.audit.search import neighbours

    rng = np.random.default_rng(4)
    z = normalised(rng.normal(size=(20_000, 16)) @ rng.normal(size=(16, 64)) + 0.3 * rng.normal(size=(20_000, 64)))
    ratio = distance_ratio(neighbours(z, 2)[0])
    logs = np.log(ratio)
    six_sigma = np.exp(np.median(logs) - 6 * 1.4826 * np.median(np.abs(logs - np.median(logs))))
    assert np.mean(ratio <= six_sigma) > 0.003                            # the old rule's false flags
    assert np.sum(ratio <= ratio_bound(ratio)[0]) <= 1                    # family-wise error 0.05


def test_separation_tells_apart_groups_that_differ():
    from embedkit.audit.maps import separation

    rng = np.random.default_rng(2)
    same = rng.normal(size=(400, 8))
    g = np.repeat(["a", "b"], 200)
    apart = same + np.where(g == "a", 3.0, 0.0)[:, None]
    assert separation(apart, g) > 5 * separation(same, g)


def test_separation_is_its_definition_over_many_groups():
    """Largest centroid distance over pooled within-group RMS distance to the centroid, as written out pair
    by pair (the fast path takes group sums from metrics.stats.sums_by and distances from a Gram matrix)."""
    from embedkit.audit.maps import separation

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3000, 6)) + 50).astype(np.float32)        # far from the origin: no cancellation
    g = rng.choice([f"c{i}" for i in range(40)], 3000)
    names = np.unique(g)
    cents = np.stack([x[g == n].mean(0, dtype=np.float64) for n in names])
    within = np.sqrt(np.mean([np.mean(np.sum((x[g == n] - c) ** 2, 1)) for n, c in zip(names, cents)]))
    gap = max(np.linalg.norm(a - b) for i, a in enumerate(cents) for b in cents[i + 1:])
    assert separation(x, g) == pytest.approx(gap / within, rel=1e-6)


def test_phantom_attributes_are_predicted_and_the_planted_copies_found(tmp_path, capsys):
    from embedkit.cli.app import main
    from embedkit.data.phantom import Bias, PhantomSpec, make_phantom

    # 48 pixels: at 32 a 6 % resize blurs a copy to a distance ratio of ~0.5, which no family-wise test over
    # 194 images in ~7 intrinsic dimensions can tell from an ordinary neighbour (at 48 it is ~0.15)
    src = make_phantom(tmp_path / "p", PhantomSpec(per_group=8, size=48, seed=0, duplicates=2, near_duplicates=2,
                                                   bias=[Bias.parse("sex=F:0.6")]))
    common = ["--manifest", str(src), "--cache-dir", str(tmp_path / "c")]
    assert main(["extract", "--model", "gloria-tiny", "--quiet", *common]) == 0
    assert main(["audit", "--model", "gloria-tiny", *common, "--runs-dir", str(tmp_path / "r"), "--n-boot", "200",
                 "--n-perm", "200"]) == 0
    import json

    s = json.loads((tmp_path / "r/p/gloria-tiny/audit/audit.json").read_text())
    sex = s["attributes"]["sex"]
    assert sex["auc"] > sex["chance_auc_q95"] and sex["p_value"] < 0.05 and sex["auc"] > 0.8  # body size, breast shadows
    assert s["duplicates"]["exact"] == 2 and s["duplicates"]["per_split_pair"].get("test/train") == 4   # 2 exact, 2 near
    import csv

    pairs = list(csv.DictReader((tmp_path / "r/p/gloria-tiny/audit/pairs.csv").open()))
    found = {(p["kind"], frozenset((p["image_a"], p["image_b"]))) for p in pairs}
    copies = json.loads((tmp_path / "p/phantom.json").read_text())
    assert {("exact", frozenset(kv)) for kv in copies["duplicates_of"].items()} <= found
    assert {("near", frozenset(kv)) for kv in copies["near_duplicates_of"].items()} <= found    # resized, re-encoded
    assert s["duplicates"]["near_when"].startswith("distance ratio ≤") and s["duplicates"]["near"] == 2   # nothing else
    ks = s["distribution"]["per_attribute"]["sex"]      # the planted sex difference shows in the components
    assert ks["rejected"] > 0 and ks["largest"]["q"] < 0.05 and (tmp_path / "r/p/gloria-tiny/audit/ks.csv").is_file()
    capsys.readouterr()
    assert main(["audit", "--model", "gloria-tiny", *common, "--attributes", "race"]) == 2
    assert "no column 'race' for --attributes" in capsys.readouterr().err
    store = next((tmp_path / "c").glob("gloria-tiny-*.h5"))
    assert main(["audit", "--model", "clip-tiny", "--manifest", str(src), "--cache-file", str(store)]) == 2
    assert "holds gloria-tiny's embeddings, not clip-tiny's" in capsys.readouterr().err


def test_umap_is_optional_and_says_how_to_get_it():
    import importlib.util

    from embedkit.audit.maps import project
    from embedkit.errors import EmbedkitError

    x = np.random.default_rng(0).normal(size=(50, 8))
    assert project(x, "pca").shape == (50, 2)
    if importlib.util.find_spec("umap") is None:
        with pytest.raises(EmbedkitError, match="umap-learn"):
            project(x, "umap")
    with pytest.raises(EmbedkitError, match="choose pca or umap"):
        project(x, "tsne")


def test_attribute_probe_statistics_resample_patients():
    """Ten copies of each image carry one patient's information: resampled by patient, their bootstrap and
    permutation AUCs equal those of one image per patient (the same draws); image by image they would be about
    three times narrower, and the probe's CI and p-value overconfident."""
    from embedkit.audit.probes import resampled_aucs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    proba = rng.dirichlet(np.ones(3), 150) + 0.4 * np.eye(3)[y]
    proba /= proba.sum(1, keepdims=True)
    boot, null = resampled_aucs(y, proba, None, n_boot=300, n_perm=300, seed=4)
    copies = np.repeat(np.arange(150), 10)
    patients = np.array([f"p{i}" for i in copies])
    same_boot, same_null = resampled_aucs(y[copies], proba[copies], patients, n_boot=300, n_perm=300, seed=4)
    np.testing.assert_allclose(same_boot, boot, rtol=1e-12)
    np.testing.assert_allclose(same_null, null, rtol=1e-12)
    naive_boot, naive_null = resampled_aucs(y[copies], proba[copies], None, n_boot=300, n_perm=300, seed=4)
    assert np.std(boot) > 2.5 * np.std(naive_boot) and np.std(null) > 2.5 * np.std(naive_null)
    assert 0.3 < np.mean(null) < 0.7 < np.mean(boot)


def test_ks_tests_count_each_patient_once():
    """Copies of a patient's image add no evidence: with patient ids the tests equal those of one image per
    patient; image by image the same copies would shrink every p-value."""
    from embedkit.audit.distribution import ks_tests

    rng = np.random.default_rng(1)
    n = 80
    sex = np.where(np.arange(n) % 2 == 0, "M", "F")
    scores = rng.normal(size=(n, 2)) + 0.25 * (sex == "M")[:, None]
    labels = np.where(np.arange(n) % 4 < 2, "Edema", "Mass")
    copies = np.repeat(np.arange(n), 5)
    args = ({"sex": sex}, {"sex": ["M", "F"]})
    once = ks_tests((scores, np.ones(2)), labels, *args)
    repeated = ks_tests((scores[copies], np.ones(2)), labels[copies], {"sex": sex[copies]}, args[1],
                        patient_id=np.array([f"p{i}" for i in copies]))
    naive = ks_tests((scores[copies], np.ones(2)), labels[copies], {"sex": sex[copies]}, args[1])
    assert [(r["d"], r["p"], r["n_a"]) for r in repeated["rows"]] == [(r["d"], r["p"], r["n_a"]) for r in once["rows"]]
    assert all(b["p"] < a["p"] for a, b in zip(once["rows"], naive["rows"]) if a["p"] < 1)
    assert repeated["unit"].startswith("patient") and once["unit"] == "image"
