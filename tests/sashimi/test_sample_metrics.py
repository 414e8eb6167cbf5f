"""FID / IS / mIS / AM / NDB, k-means and the likelihood trim against hand-computed cases.

Golden values marked "paper's script" were computed by the functions of state-spaces/s4
models/sashimi/metrics.py (scipy 1.17, scikit-learn 1.9) on the same inputs, which are built from
formulas (no random generator) so they are the same on every numpy.
"""
import math
import warnings

import numpy as np
import pytest

from sashimi import sample_metrics as sm
from sashimi.kmeans import kmeans, nearest_centre


def _with_moments(mu, cov, n, seed):
    """n vectors whose sample mean and unbiased sample covariance are exactly mu and cov."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(mu)))
    z -= z.mean(0)
    w = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(w, z.T).T  # now cov(z) = I exactly (to rounding)
    return mu + z @ np.linalg.cholesky(cov).T


def _formula_probs(n=200, c=10):
    i, k = np.arange(n)[:, None], np.arange(c)[None, :]
    p = np.exp(3 * np.sin(1.3 * i + 0.7 * k * k))
    return p / p.sum(1, keepdims=True)


# ---- FID ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,d", [(500, 32), (20, 40)])  # full-rank and singular (n < d) covariances
def test_fid_of_identical_sets_is_zero(n, d):
    x = np.random.default_rng(0).normal(size=(n, d)) @ np.random.default_rng(1).normal(size=(d, d))
    assert abs(sm.fid(x, x)) < 1e-6  # Tr(2Σ − 2 sqrtm(Σ²)) = 0; float64 rounding is ~1e-12 of Tr Σ


def test_fid_of_two_gaussians_is_the_closed_form():
    # Non-commuting 2x2 covariances: for M with non-negative eigenvalues, Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    s_r = np.array([[2.0, 0.6], [0.6, 1.0]])
    s_g = np.array([[0.5, -0.3], [-0.3, 3.0]])
    mu_r, mu_g = np.array([1.0, -2.0]), np.array([0.0, 0.5])
    prod = s_r @ s_g
    tr_sqrt = math.sqrt(np.trace(prod) + 2 * math.sqrt(np.linalg.det(s_r) * np.linalg.det(s_g)))
    expected = 1.0 + 6.25 + np.trace(s_r) + np.trace(s_g) - 2 * tr_sqrt
    got = sm.fid(_with_moments(mu_r, s_r, 400, 0), _with_moments(mu_g, s_g, 300, 1))
    assert got == pytest.approx(expected, rel=1e-9)  # the sets' moments are exact up to rounding
    # Diagonal covariances: FID = |Δμ|² + Σ (sqrt a_i − sqrt b_i)².
    a, b = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    mu = np.array([3.0, 0.0, 4.0])
    got = sm.fid(_with_moments(np.zeros(3), np.diag(a), 200, 2), _with_moments(mu, np.diag(b), 250, 3))
    assert got == pytest.approx(25.0 + 1.0 + 4.0 + 0.0, rel=1e-9)


def test_fid_retries_with_a_diagonal_offset_when_not_finite(monkeypatch):
    calls = []
    real = sm.trace_sqrt_product

    def failing_once(s_r, s_g):
        calls.append(s_r.copy())
        if len(calls) == 1:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real(s_r, s_g)

    monkeypatch.setattr(sm, "trace_sqrt_product", failing_once)
    a, b = np.array([4.0, 1.0]), np.array([1.0, 9.0])
    x, y = _with_moments(np.zeros(2), np.diag(a), 100, 0), _with_moments(np.zeros(2), np.diag(b), 100, 1)
    with pytest.warns(UserWarning, match="retrying"):
        got = sm.fid(x, y)
    e = sm.FID_EPS
    assert len(calls) == 2 and np.allclose(calls[1] - calls[0], e * np.eye(2))
    assert got == pytest.approx(sum((math.sqrt(p + e) - math.sqrt(q + e)) ** 2 for p, q in zip(a, b)), rel=1e-9)


def test_fid_refuses_mismatched_or_tiny_sets():
    with pytest.raises(ValueError, match="feature sizes"):
        sm.fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        sm.fid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        sm.fid(np.full((5, 3), np.nan), np.zeros((5, 3)))


# ---- IS, mIS, AM ----------------------------------------------------------------------------------

def test_even_one_hot_probabilities():
    p = np.eye(10)[np.arange(1000) % 10]
    assert sm.inception_score(p) == pytest.approx(10.0, rel=1e-12)  # KL(one-hot || uniform) = ln 10
    assert sm.am_score(np.full((7, 10), 0.1), p) == pytest.approx(0.0, abs=1e-12)  # same class mix, no entropy
    # The paper's script: per class ln(|A| / n_c) over the first shuffled half A: 10.0796..., not 10.
    assert sm.inception_score_s4(p) == pytest.approx(10.079602478333978, rel=1e-12)


def test_constant_probabilities_score_one():
    p = np.tile(np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]), (300, 1))
    assert sm.inception_score(p) == pytest.approx(1.0, abs=1e-12)
    assert sm.modified_inception_score(p) == pytest.approx(1.0, abs=1e-12)
    assert sm.inception_score_s4(p) == pytest.approx(1.0, abs=1e-12)  # every column uniform over samples
    assert sm.am_score(p, p) == pytest.approx(-(p[0] * np.log(p[0])).sum(), rel=1e-12)  # the entropy term alone


def test_scores_match_the_paper_script_on_the_same_inputs():
    p = _formula_probs()
    assert sm.inception_score_s4(p) == pytest.approx(2.07231643119754, rel=1e-12)  # paper's script
    assert sm.modified_inception_score(p) == pytest.approx(9.513358845863753, rel=1e-12)  # same pairs drawn
    assert sm.am_score(p[:120], p[120:]) == pytest.approx(1.477477525090969, rel=1e-12)  # paper's script


def test_standard_is_by_hand_and_order_free():
    p = _formula_probs()
    manual = math.exp(np.mean([(q * np.log(q / p.mean(0))).sum() for q in p]))
    assert sm.inception_score(p) == pytest.approx(manual, rel=1e-12)
    assert sm.inception_score(p[::-1]) == pytest.approx(manual, rel=1e-12)


def test_am_grows_when_a_class_is_missing():
    ref = np.eye(10)[np.arange(1000) % 10]
    gen = np.eye(10)[np.arange(900) % 9] * 0.99 + 0.001  # classes 0..8 only, nearly confident
    kl = (0.1 * np.log(0.1 / gen.mean(0))).sum()
    h = -(gen[0] * np.log(gen[0])).sum()
    assert sm.am_score(ref, gen) == pytest.approx(kl + h, rel=1e-12)


# ---- NDB and k-means ------------------------------------------------------------------------------

def _clusters(per=40, k=50, seed=0):
    """k tight clusters at 10·e_i in k dimensions (well separated), ``per`` points each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per)
    return 10 * np.eye(k)[labels] + 0.1 * rng.normal(size=(k * per, k)), labels


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    x, truth = _clusters()
    centres, labels = kmeans(x, 50, seed=0)
    # the same partition as the truth (cluster numbers are arbitrary): a bijection between labels
    assert len(set(zip(truth, labels))) == 50 and len(set(labels)) == 50
    assert np.array_equal(nearest_centre(x, centres), labels)
    c2, l2 = kmeans(x, 50, seed=0)
    assert np.array_equal(centres, c2) and np.array_equal(labels, l2)


def test_two_proportion_test_against_hand_computed_z():
    # pooled 0.5, se = sqrt(0.25·0.02) = 0.0707: z = 2.83 (p = 0.0047) differs, z = 1.41 (p = 0.157) does not
    assert sm.two_proportion_differs([60, 55], 100, [40, 45], 100).tolist() == [True, False]
    assert sm.two_proportion_differs([0], 100, [0], 50).tolist() == [False]  # empty in both: no variance


def test_ndb_of_a_set_against_itself_is_zero():
    x, _ = _clusters()
    assert sm.ndb_score(x, x) == 0.0
    assert sm.ndb_score(x, x[::2]) == 0.0  # every bin keeps its share exactly


def test_ndb_of_a_set_drawn_from_one_cluster():
    x, _ = _clusters()  # 2000 reference vectors, 40 (2 %) per bin
    gen = 10 * np.eye(50)[np.zeros(400, int)] + 0.1 * np.random.default_rng(5).normal(size=(400, 50))
    # The occupied bin holds 100 % instead of 2 %: differs. An empty bin: pooled 40/2400, se = 0.0070,
    # z = 0.02/0.0070 = 2.85, p = 0.004: differs too, so all 50 bins differ.
    assert sm.ndb_score(x, gen) == 1.0
    # With 100 generated clips the empty bins are not significant (pooled 40/2100, se = 0.0140, z = 1.43,
    # p = 0.15): only the occupied one differs, 1/50.
    assert sm.ndb_score(x, gen[:100]) == pytest.approx(1 / 50)


def test_ndb_needs_enough_reference_vectors():
    with pytest.raises(ValueError, match="cannot fill 50 bins"):
        sm.ndb_score(np.zeros((49, 3)), np.zeros((10, 3)))


# ---- likelihood trim, the whole table ---------------------------------------------------------------

def test_likelihood_trim_keeps_the_middle():
    n = 10240  # the paper's count: 40 % = 4096 dropped below, 5 % = 512 above, 5632 kept
    ll = np.random.default_rng(0).permutation(n).astype(float)  # the value is the rank
    keep = sm.likelihood_trim(ll, 0.4, 0.95)
    assert len(keep) == 5632
    assert set(keep.tolist()) == set(np.flatnonzero((ll >= 4096) & (ll < 9728)).tolist())
    assert len(sm.likelihood_trim(np.arange(100.0), 0.29, 1.0)) == 71  # 0.29·100 = 28.999… in floating point
    assert len(sm.likelihood_trim(np.arange(7.0), 0.0, 1.0)) == 7
    for bad in ((0.5, 0.5), (-0.1, 0.9), (0.2, 1.1)):
        with pytest.raises(ValueError, match="LOW < HIGH"):
            sm.likelihood_trim(ll, *bad)


def test_all_metrics_of_a_set_against_itself():
    x, labels = _clusters(per=20, k=50)
    p = np.eye(50)[labels] * 0.9 + 0.1 / 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = sm.all_metrics(x, p, x, p)
    assert set(m) == {"fid", "is", "is_s4", "mis", "am", "ndb"}
    assert abs(m["fid"]) < 1e-6 and m["ndb"] == 0.0
    assert m["am"] == pytest.approx(-(p[0] * np.log(p[0])).sum(), rel=1e-12)
    seconds = {}
    assert sm.all_metrics(x, p, x, p, seconds=seconds) == m and set(seconds) == set(m)


def test_all_metrics_computes_only_the_names_asked_for():
    x, labels = _clusters(per=20, k=50)
    p = np.eye(50)[labels] * 0.9 + 0.1 / 50
    seconds = {}
    some = sm.all_metrics(x, p, x[::2], p[::2], seconds=seconds, names=("am", "fid"))
    assert list(some) == ["am", "fid"] and set(seconds) == {"am", "fid"}
    whole = sm.all_metrics(x, p, x[::2], p[::2])
    assert some == {k: whole[k] for k in ("am", "fid")} and tuple(whole) == sm.METRICS
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['fad'\]"):
        sm.all_metrics(x, p, x, p, names=("fad",))
