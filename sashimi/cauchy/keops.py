"""PyKeOps Cauchy kernel: a lazy reduction that never materialises (batch, N, K).

PyKeOps is optional. It compiles its formula on first use (g++ on CPU, nvcc on CUDA), so
availability is decided by actually running a tiny reduction once; any failure (no package,
no compiler) disables the backend and is reported with a single warning.
"""
from __future__ import annotations

import os
import warnings

import torch

_STATE: dict = {}
_FORMULA = "ComplexDivide(v, z - w) + ComplexDivide(Conj(v), z - Conj(w))"


def _reduction():
    if "red" not in _STATE:
        from pykeops.torch import Genred  # noqa: PLC0415  (optional dependency)

        _STATE["red"] = Genred(_FORMULA, ["v = Vj(2)", "z = Vi(2)", "w = Vj(2)"], reduction_op="Sum", axis=1)
    return _STATE["red"]


def available() -> bool:
    """True when a tiny keops reduction compiles and matches the naive kernel (checked once)."""
    if "ok" in _STATE:
        return _STATE["ok"]
    ok, why = False, ""
    if os.environ.get("SASHIMI_DISABLE_KEOPS"):
        why = "SASHIMI_DISABLE_KEOPS is set"
    else:
        try:
            from .naive import cauchy_naive  # noqa: PLC0415

            v = torch.randn(2, 3, dtype=torch.complex64)
            w = torch.randn(3, dtype=torch.complex64)
            z = torch.randn(5, dtype=torch.complex64) + 3
            ref = cauchy_naive(v, z, w)
            ok = bool(torch.allclose(_run(v, z, w), ref, rtol=1e-4, atol=1e-5))
            why = "" if ok else "self-check disagreed with the naive kernel"
        except Exception as exc:  # any import/compile failure means: fall back
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if not ok:
        warnings.warn(f"PyKeOps Cauchy backend unavailable ({why}); using the chunked backend", stacklevel=3)
    _STATE["ok"] = ok
    return ok


def disable(why: str) -> None:
    """Turn the backend off for this process after a failure at use time (one warning)."""
    if _STATE.get("ok", True):
        warnings.warn(f"PyKeOps Cauchy backend failed ({why}); using the chunked backend", stacklevel=3)
    _STATE["ok"] = False


def _run(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    v, w = torch.broadcast_tensors(v, w.unsqueeze(-2))  # the M numerators become batch rows
    batch = v.shape[:-1]
    N, K = v.shape[-1], z.shape[-1]
    vr = torch.view_as_real(v.reshape(-1, N).contiguous()).unsqueeze(1)  # (B, 1, N, 2) -> Vj
    wr = torch.view_as_real(w.reshape(-1, N).contiguous()).unsqueeze(1)
    zr = torch.view_as_real(z.contiguous()).reshape(1, K, 2).expand(vr.shape[0], K, 2).contiguous()
    vr, wr = vr.squeeze(1), wr.squeeze(1)
    backend = "GPU" if v.is_cuda else "CPU"
    r = _reduction()(vr, zr, wr, backend=backend)  # (B, K, 2)
    return torch.view_as_complex(r.contiguous()).reshape(batch + (K,))


def cauchy_keops(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if not available():
        raise RuntimeError("PyKeOps backend requested but unavailable (see the warning above)")
    return _run(v, z, w)
