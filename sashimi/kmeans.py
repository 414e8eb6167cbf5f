"""Seeded k-means (k-means++ seeding, then Lloyd iterations) in float64 numpy, for the NDB metric.

NDB needs 50 clusters of a few thousand classifier features once per evaluation: a few dozen lines of
numpy do it in well under a second, so scikit-learn is not a dependency. The recipe is the one
scikit-learn's ``KMeans`` documents (greedy k-means++ with 2 + ln k candidate centres per step, one
initialisation, Lloyd until the squared centre shift is at most ``tol`` times the mean feature variance,
empty clusters moved to the points farthest from their centres). The random streams differ, so on the
same data the clusters can differ from scikit-learn's, as they would between two of its seeds.
"""
from __future__ import annotations

import math

import numpy as np


def squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, d), (k, d) -> (n, k) squared Euclidean distances, clamped at 0 against rounding."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each row of ``x``."""
    return squared_distances(np.asarray(x, dtype=np.float64), np.asarray(centres, dtype=np.float64)).argmin(1)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++: each new centre is the best (lowest total potential) of 2 + ln k candidates
    drawn with probability proportional to the squared distance to the nearest centre so far."""
    n = len(x)
    trials = 2 + int(math.log(k))
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    closest = squared_distances(x, centres[:1])[:, 0]
    for c in range(1, k):
        pot = closest.sum()
        if pot <= 0:  # fewer distinct points than clusters: any point will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * pot), n - 1)
        d = np.minimum(closest[None, :], squared_distances(x, x[cand]).T)  # (trials, n)
        best = int(d.sum(1).argmin())
        centres[c], closest = x[cand[best]], d[best]
    return centres


def kmeans(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 300, tol: float = 1e-4
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` into ``k`` groups -> (centres (k, d) float64, labels (n,) int64).

    Deterministic for a given ``seed``. ``tol`` is relative to the mean per-feature variance of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"kmeans: expected a 2-D (points, features) array, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"kmeans: need 1 <= k <= number of points, got k={k} for {len(x)} points")
    if not np.isfinite(x).all():
        raise ValueError("kmeans: the points contain NaN or Inf")
    rng = np.random.default_rng(seed)
    centres = kmeans_plus_plus(x, k, rng)
    threshold = tol * float(x.var(0).mean())
    for _ in range(max_iter):
        d = squared_distances(x, centres)
        labels = d.argmin(1)
        counts = np.bincount(labels, minlength=k)
        new = np.zeros_like(centres)
        np.add.at(new, labels, x)
        empty = np.flatnonzero(counts == 0)
        if len(empty):  # relocate each empty cluster to one of the points worst served by its centre
            far = np.argsort(-d[np.arange(len(x)), labels])[:len(empty)]
            new[empty], counts[empty] = x[far], 1
        new /= counts[:, None]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= threshold:
            break
    return centres, nearest_centre(x, centres)
