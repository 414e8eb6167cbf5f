"""Sample-quality metrics of the SaShiMi paper's SC09 table, from a digit classifier's outputs.

Inputs are what a classifier gives for a set of clips: ``features`` (n, d), the input of its final linear
layer, and ``probs`` (n, classes), the softmax of its logits. The reference set (FID, AM, NDB) is the
classifier's train split. Everything is computed in float64 numpy. Formulas follow the paper's metrics
script (state-spaces/s4, ``models/sashimi/metrics.py``), with two deliberate choices:

* IS is the standard exp(E_x KL(p(y|x) || p(y))). That script computes a different number (see
  ``inception_score_s4``); it is given under its own name so our figures can sit beside the paper's.
* Tr sqrtm(S_r S_g) (FID) is the sum of the singular values of B = S_r^½ S_g^½. S_r S_g has the
  eigenvalues of S_r^½ S_g S_r^½ = B Bᵀ (AB and BA share non-zero eigenvalues), which are B's squared
  singular values; so two symmetric eigen-decompositions and one SVD replace a general matrix square root,
  never give complex values, and take no square root of eigenvalues that are rounding noise around 0
  (the sum of sqrt(eig(B Bᵀ)) erred by 5e-5 on identical sets with singular covariances; this, < 1e-9).

KL divergences and entropies are in nats; a distribution is normalised to sum 1 before use, as
``scipy.stats.entropy`` does.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .kmeans import kmeans, nearest_centre

FID_EPS = 1e-4  # added to both covariances' diagonals when the plain FID is not finite (as the paper's script)
MIS_PAIRS = 10_000
NDB_BINS = 50
NDB_ALPHA = 0.05
PAPER_TRIM = (0.4, 0.95)  # autoregressive samples: drop the lowest 40 % and highest 5 % by log-likelihood


def _matrix(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def _probs(p, name: str = "probs") -> np.ndarray:
    p = _matrix(p, name)
    if (p < 0).any():
        raise ValueError(f"{name}: negative probabilities")
    return p


def _normalise(p: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / p.sum(axis=axis, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """KL(p || q) along ``axis`` after normalising both along it; 0·log 0 = 0, p > 0 = q gives inf."""
    p, q = _normalise(p, axis), _normalise(q, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), np.where(np.isnan(p), np.nan, 0.0))
    return terms.sum(axis=axis)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (after normalising)."""
    p = _normalise(p, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


# ---- FID ------------------------------------------------------------------------------------------

def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s_r: np.ndarray, s_g: np.ndarray) -> float:
    """Tr sqrtm(S_r S_g) for symmetric PSD S_r, S_g: the nuclear norm of S_r^½ S_g^½."""
    return float(np.linalg.svd(_sqrt_psd(s_r) @ _sqrt_psd(s_g), compute_uv=False).sum())


def _fid_from_moments(mu_r, s_r, mu_g, s_g) -> float:
    try:
        tr = trace_sqrt_product(s_r, s_g)
    except np.linalg.LinAlgError:
        tr = math.nan
    return float(((mu_g - mu_r) ** 2).sum() + np.trace(s_r) + np.trace(s_g) - 2.0 * tr)


def fid(feat_ref, feat_gen) -> float:
    """Fréchet distance ||μ_g − μ_r||² + Tr(Σ_g + Σ_r − 2 sqrtm(Σ_r Σ_g)) between two feature sets.

    Covariances are unbiased (n − 1), as ``np.cov``. When the value is not finite (an eigen-solver
    that did not converge), it is recomputed once with ``FID_EPS``·I added to both covariances, as the
    paper's script does after a failed ``sqrtm``.
    """
    r, g = _matrix(feat_ref, "feat_ref"), _matrix(feat_gen, "feat_gen")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"fid: feature sizes differ ({r.shape[1]} vs {g.shape[1]})")
    if len(r) < 2 or len(g) < 2:
        raise ValueError(f"fid: need at least 2 vectors per set for a covariance, got {len(r)} and {len(g)}")
    mu_r, mu_g = r.mean(0), g.mean(0)
    s_r, s_g = np.cov(r, rowvar=False).reshape(r.shape[1], -1), np.cov(g, rowvar=False).reshape(g.shape[1], -1)
    value = _fid_from_moments(mu_r, s_r, mu_g, s_g)
    if not math.isfinite(value):
        warnings.warn(f"fid: not finite; retrying with {FID_EPS:g}·I added to both covariances", stacklevel=2)
        eye = FID_EPS * np.eye(len(s_r))
        value = _fid_from_moments(mu_r, s_r + eye, mu_g, s_g + eye)
    return value


# ---- IS, mIS, AM ----------------------------------------------------------------------------------

def inception_score(probs) -> float:
    """The standard IS: exp(mean_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over all samples.

    Between 1 (every clip gets the same distribution) and the number of classes (confident, balanced).
    """
    p = _probs(probs)
    return float(np.exp(_kl(p, p.mean(0, keepdims=True), axis=1).mean()))


def inception_score_s4(probs) -> float:
    """The IS *variant* computed by the paper's script (state-spaces/s4 ``models/sashimi/metrics.py``).

    What that code computes: shuffle the n samples with numpy's legacy generator seeded 0
    (``RandomState(0).permutation(n)``), take the first n//2 as A and the rest as B, m = mean of B's rows;
    then ``scipy.stats.entropy(A, tile(m))`` with its default ``axis=0``, i.e. for each class c a KL over
    the *sample* axis between column A[:, c] normalised to sum 1 and the constant column m[c] normalised
    to sum 1 (uniform, 1/|A|): KL_c = log|A| − H(A[:, c] / Σ_i A[i, c]). The score is exp(mean_c KL_c).
    So B only matters through m[c] > 0, and the number measures how unevenly each class's probability
    mass is spread over the clips of A, not the standard IS; it is NaN if a class has no mass in A.
    """
    p = _probs(probs)
    n = len(p)
    if n < 2:
        raise ValueError(f"inception_score_s4: need at least 2 samples, got {n}")
    p = p[np.random.RandomState(0).permutation(n)]
    a, b = p[: n // 2], p[n // 2:]
    m = np.broadcast_to(b.mean(0), a.shape)
    return float(np.exp(_kl(a, m, axis=0).mean()))


def modified_inception_score(probs, pairs: int = MIS_PAIRS, seed: int = 0) -> float:
    """mIS: exp(mean KL(p_i || p_j)) over ``pairs`` index pairs (i, j) drawn uniformly with replacement.

    Pairs come from numpy's legacy generator seeded ``seed`` drawing two indices per pair, the stream
    the paper's script draws with ``np.random.seed(0)`` and ``np.random.choice(n, 2)`` per pair, so the
    same probabilities give the same pairs as there.
    """
    p = _probs(probs)
    idx = np.random.RandomState(seed).randint(0, len(p), size=(pairs, 2))
    return float(np.exp(_kl(p[idx[:, 0]], p[idx[:, 1]], axis=1).mean()))


def am_score(probs_ref, probs_gen) -> float:
    """AM: KL(mean p_ref || mean p_gen) + mean_i H(p_gen,i). 0 for confident clips whose class mix
    matches the reference's; the KL term grows when classes are missing, the entropy when clips are vague."""
    r, g = _probs(probs_ref, "probs_ref"), _probs(probs_gen, "probs_gen")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"am_score: class counts differ ({r.shape[1]} vs {g.shape[1]})")
    return float(_kl(r.mean(0), g.mean(0)) + entropy(g, axis=1).mean())


# ---- NDB ------------------------------------------------------------------------------------------

def two_proportion_differs(k1, n1: int, k2, n2: int, alpha: float = NDB_ALPHA) -> np.ndarray:
    """Two-sided two-proportion z-test per bin: do k1/n1 and k2/n2 differ at level ``alpha``?

    z = (p1 − p2) / sqrt(p̂(1 − p̂)(1/n1 + 1/n2)), p̂ the pooled share; p-value = 2Φ(−|z|) = erfc(|z|/√2).
    A bin where the pooled share is 0 or 1 (no variance) does not differ.
    """
    k1, k2 = np.asarray(k1, dtype=np.float64), np.asarray(k2, dtype=np.float64)
    p1, p2, pooled = k1 / n1, k2 / n2, (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(se > 0, np.abs(p1 - p2) / se, 0.0)
    pvals = np.array([math.erfc(v / math.sqrt(2.0)) for v in z.ravel()]).reshape(z.shape)
    return pvals < alpha


def ndb_score(feat_ref, feat_gen, bins: int = NDB_BINS, alpha: float = NDB_ALPHA, seed: int = 0) -> float:
    """NDB/k: k-means (``bins`` clusters, seeded) on the reference features, every vector assigned to its
    nearest centre, and the fraction of bins whose reference and generated shares differ
    (``two_proportion_differs``). 0 when the two sets fill the bins alike."""
    r, g = _matrix(feat_ref, "feat_ref"), _matrix(feat_gen, "feat_gen")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"ndb_score: feature sizes differ ({r.shape[1]} vs {g.shape[1]})")
    if len(r) < bins:
        raise ValueError(f"ndb_score: {len(r)} reference vectors cannot fill {bins} bins")
    centres, labels_r = kmeans(r, bins, seed=seed)
    counts_r = np.bincount(labels_r, minlength=bins)
    counts_g = np.bincount(nearest_centre(g, centres), minlength=bins)
    return float(two_proportion_differs(counts_r, len(r), counts_g, len(g), alpha).mean())


# ---- likelihood trim and the whole table -----------------------------------------------------------

def likelihood_trim(log_likelihood, low: float = PAPER_TRIM[0], high: float = PAPER_TRIM[1]) -> np.ndarray:
    """Indices of the samples kept after sorting by log-likelihood (ascending) and dropping the lowest
    ``low`` and the highest ``1 − high`` fractions: sorted positions floor(low·n) to floor(high·n),
    as the paper's script slices (a 1e-9 guard keeps 0.29·100 from flooring to 28)."""
    ll = np.asarray(log_likelihood, dtype=np.float64).ravel()
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"likelihood trim: need 0 <= LOW < HIGH <= 1, got {low:g},{high:g}")
    if not np.isfinite(ll).all():
        raise ValueError("likelihood trim: log-likelihoods contain NaN or Inf")
    n = len(ll)
    lo, hi = math.floor(low * n + 1e-9), math.floor(high * n + 1e-9)
    return np.argsort(ll, kind="stable")[lo:hi]


METRICS = ("fid", "is", "is_s4", "mis", "am", "ndb")  # the table's columns, in its order


def all_metrics(feat_ref, probs_ref, feat_gen, probs_gen, seconds: dict | None = None,
                names: tuple[str, ...] = METRICS) -> dict[str, float]:
    """The metrics ``names`` (default: every metric of the table) for one generated (or held-out) set
    against the reference set; ``seconds``, when given, receives each metric's wall time."""
    table = {
        "fid": lambda: fid(feat_ref, feat_gen),
        "is": lambda: inception_score(probs_gen),
        "is_s4": lambda: inception_score_s4(probs_gen),
        "mis": lambda: modified_inception_score(probs_gen),
        "am": lambda: am_score(probs_ref, probs_gen),
        "ndb": lambda: ndb_score(feat_ref, feat_gen),
    }
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"all_metrics: unknown metric(s) {unknown}; known: {list(table)}")
    out = {}
    for name in names:
        t = time.perf_counter()
        out[name] = table[name]()
        if seconds is not None:
            seconds[name] = time.perf_counter() - t
    return out
