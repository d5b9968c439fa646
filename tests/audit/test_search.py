"""The duplicate audit's neighbour search (embedkit.audit.search), against brute force written out."""

import numpy as np

def test_the_radius_scan_finds_every_pair_within_each_rows_radius(monkeypatch):
    """Against all pairs written out, with blocks small enough that rows cross block edges, on one thread and
    with blocks side by side on two."""
    from embedkit.audit import search
    from embedkit.audit.distribution import principal_scores
    from embedkit.audit.duplicates import normalised

    monkeypatch.setattr(search, "QUERY_BLOCK", 64)
    monkeypatch.setattr(search, "DATA_BLOCK", 256)
    monkeypatch.setattr(search, "PAIRS_PER_ROW", 1_500)
    rng = np.random.default_rng(8)
    z = normalised(rng.normal(size=(1_500, 6)) @ rng.normal(size=(6, 48)) + 0.1 * rng.normal(size=(1_500, 48)))
    radius2 = rng.uniform(0.0, 0.3, size=len(z))
    d2 = 2 - 2 * (z @ z.T).astype(np.float64)
    np.fill_diagonal(d2, np.inf)
    want = {(a, b) for a, b in zip(*np.nonzero(d2 <= radius2[:, None]))}
    assert len(want) > 1_000
    for axes, threads in ((3, 1), (8, 1), (8, 2)):         # few axes let many pairs through to be measured in full
        monkeypatch.setattr(search, "AXES", (axes,))
        with search.search_threads(threads):
            i, j, cos, used = search.within(z, radius2, principal_scores(z, 8, dtype=np.float32)[0],
                                            np.arange(0, 1_500, 7))
        assert used == axes and set(zip(i.tolist(), j.tolist())) == want and len(i) == len(want)
        assert np.allclose(cos, np.einsum("nd,nd->n", z[i], z[j]))


def test_the_radius_scan_declines_where_distances_do_not_live_on_a_few_axes():
    """Isotropic rows: on 64 of 256 axes every radius holds many rows, so the audit searches by brute force."""
    from embedkit.audit import search
    from embedkit.audit.duplicates import _principal, near_by_ratio, normalised

    z = normalised(np.random.default_rng(6).normal(size=(3_000, 256)))
    assert search.within(z, np.full(len(z), 1.0), _principal(z), np.arange(100)) is None
    scanned, brute = near_by_ratio(z, brute=False), near_by_ratio(z, brute=True)
    assert scanned.search == "exact" and scanned.pairs == brute.pairs and scanned.bound == brute.bound


def test_the_second_distance_bound_is_an_upper_bound():
    from embedkit.audit import search
    from embedkit.audit.distribution import principal_scores
    from embedkit.audit.duplicates import normalised

    z = normalised(np.random.default_rng(9).normal(size=(3_000, 32)))
    bound = search.second_distance_bound(z, principal_scores(z, 8, dtype=np.float32)[0])
    second = 2 - 2 * search.neighbours(z, 2)[0][:, 1].astype(np.float64)
    assert np.all(bound >= second - 1e-5) and np.median(bound / second) < 1.5


def test_a_few_rows_find_the_neighbours_faiss_finds(monkeypatch):
    """The few-query search (blocks of numpy products, the running best merged across blocks) against faiss's,
    with a copy of a query row tied with the row itself."""
    from embedkit.audit import search
    from embedkit.audit.duplicates import normalised

    z = normalised(np.random.default_rng(3).normal(size=(2_000, 24)))
    z[10] = z[9]
    rows = np.arange(0, 2_000, 9)
    monkeypatch.setattr(search, "TOP_BLOCK", 300)
    sims, idx = search.neighbours(z, 4, rows)
    assert len(rows) <= search.FEW_QUERIES and idx[1, 0] == 10
    monkeypatch.setattr(search, "FEW_QUERIES", 0)
    faiss_sims, faiss_idx = search.neighbours(z, 4, rows)
    assert np.array_equal(idx, faiss_idx) and np.allclose(sims, faiss_sims, atol=1e-6)


def test_search_threads_hold_faiss_and_blas_to_n_and_restore_them():
    import faiss
    from threadpoolctl import threadpool_info

    from embedkit.audit import search

    before = faiss.omp_get_max_threads()
    with search.search_threads(1):
        assert faiss.omp_get_max_threads() == 1
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    assert faiss.omp_get_max_threads() == before
