"""Conjugate-paired Cauchy kernel, the core of the S4 (DPLR) generating function.

    r[..., m, k] = Σ_n  v[..., m, n] / (z_k - w[..., n])  +  conj(v[..., m, n]) / (z_k - conj(w[..., n]))

The second term is the implied conjugate half of the state: a real SSM stores N/2 complex
modes and its conjugates come for free. ``v`` carries M numerators that share one set of
poles ``w`` (the DPLR kernel needs four), so denominators are computed once per (n, k).

Shapes: v (..., M, N), w (..., N), z (K,) -> (..., M, K). Three interchangeable,
differentiable backends:

- ``naive``: one broadcast over (..., M, N, K); the shape of the textbook formula.
- ``chunked``: blocks of z; per block the shared denominators and one real matmul; the
  backward recomputes each block, so memory stays O(batch·(N·chunk + M·K)) (L = 64000 is fine).
- ``keops``: a PyKeOps lazy reduction (compiled with g++/nvcc on first use); optional.

``backend="auto"`` takes keops on CUDA when it works, else chunked; a missing or broken
PyKeOps is reported once, as a warning. A keops failure at first use, in the forward or in the
backward (KeOps compiles the gradient formula separately, at the first ``backward()``), turns the
backend off for the process with one warning, and that call's values or gradients come from
chunked instead. Under a distributed launcher each local rank compiles into its own KeOps cache
folder (``keops.rank_cache_folder``): ranks compiling into one folder at once is a known KeOps failure.
"""
from __future__ import annotations

import torch

from . import keops as _keops
from .chunked import cauchy_chunked
from .naive import cauchy_naive

BACKENDS = ("auto", "naive", "chunked", "keops")


def keops_available() -> bool:
    return _keops.available()


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown Cauchy backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    if device.type == "cuda" and _keops.available():
        return "keops"
    return "chunked"


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    name = resolve_backend(backend, v.device)
    if name == "naive":
        return cauchy_naive(v, z, w)
    if name == "chunked":
        return cauchy_chunked(v, z, w)
    if backend == "auto":  # the self-check ran on the CPU; a CUDA build can still fail on first use
        try:
            return _keops.cauchy_keops_with_fallback(v, z, w)  # a failing backward falls back too
        except Exception as exc:  # noqa: BLE001  (any compile/runtime failure: fall back, once)
            _keops.disable(f"{type(exc).__name__} on {v.device}")
            return cauchy_chunked(v, z, w)
    return _keops.cauchy_keops(v, z, w)
