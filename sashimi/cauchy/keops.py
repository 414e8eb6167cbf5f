"""PyKeOps Cauchy kernel: a lazy reduction that never materialises (batch, N, K).

PyKeOps is optional. It compiles its formula on first use (g++ on CPU, nvcc on CUDA), so
availability is decided by actually running a tiny reduction once; any failure (no package,
no compiler) disables the backend and is reported with a single warning.

Multi-GPU nodes: KeOps compiles into one cache folder, and several ranks compiling the same
formula into it at once is a known KeOps failure (half-written .so files, lock errors). Under a
distributed launcher (``LOCAL_RANK`` set: Ray Train, torchrun) each process therefore gets its own
cache sub-folder, ``<KEOPS_CACHE_FOLDER or ~/.cache/keops-sashimi>/<host>-rank<LOCAL_RANK>``,
chosen before PyKeOps is first imported (``rank_cache_folder``). Each rank compiles once (tens of
seconds with nvcc) and reuses its own folder on later runs. ``SASHIMI_KEOPS_SHARED_CACHE=1`` keeps
the single shared folder (e.g. a cache pre-built on local rank 0).
"""
from __future__ import annotations

import os
import re
import socket
import sys
import warnings
from collections.abc import Mapping

import torch

_STATE: dict = {}
_FORMULA = "ComplexDivide(v, z - w) + ComplexDivide(Conj(v), z - Conj(w))"


def rank_cache_folder(env: Mapping[str, str], host: str) -> str | None:
    """The KeOps cache folder this process should compile into, or None to leave KeOps' own choice.

    A pure function of the environment (and the host name, so that ranks of different nodes
    sharing one network home directory do not collide either): None outside a distributed
    launcher (no ``LOCAL_RANK``) or when ``SASHIMI_KEOPS_SHARED_CACHE`` is set; otherwise a
    per-(host, local rank) sub-folder of ``KEOPS_CACHE_FOLDER`` (default ``~/.cache/keops-sashimi``)."""
    local = env.get("LOCAL_RANK", "").strip()
    if not local or env.get("SASHIMI_KEOPS_SHARED_CACHE"):
        return None
    base = env.get("KEOPS_CACHE_FOLDER") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                          ".cache", "keops-sashimi")
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", host) or "host"
    return os.path.join(base, f"{host}-rank{int(local)}")


def _use_rank_cache() -> None:
    """Point KeOps at this rank's own cache folder; must run before keopscore is first imported
    (it reads KEOPS_CACHE_FOLDER once, at import)."""
    if _STATE.get("cache_set"):
        return
    _STATE["cache_set"] = True
    folder = rank_cache_folder(os.environ, socket.gethostname())
    if folder is None:
        return
    if "keopscore" in sys.modules:  # imported by someone else already: too late to move it
        if os.environ.get("KEOPS_CACHE_FOLDER") != folder:
            warnings.warn(f"PyKeOps was imported before sashimi could give this rank its own cache folder "
                          f"({folder}); concurrent compilation by several ranks may fail", stacklevel=3)
        return
    os.makedirs(folder, exist_ok=True)
    os.environ["KEOPS_CACHE_FOLDER"] = folder


def _reduction():
    if "red" not in _STATE:
        _use_rank_cache()
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


class _KeopsWithFallback(torch.autograd.Function):
    """The keops forward, whose backward falls back to the chunked backend's if KeOps fails there.

    KeOps compiles the gradient formula separately, on the first backward, so a node can pass the
    forward and still fail (nvcc, a broken cache) at its first ``loss.backward()``. The forward
    keeps KeOps' own autograd graph (built on detached leaves, so nothing is recomputed when the
    backward works); on failure the backend is disabled for the process (one warning) and the
    gradients come from ``cauchy_chunked`` on the saved inputs instead."""

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        need_v, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        with torch.enable_grad():
            lv = v.detach().requires_grad_(need_v)
            lw = w.detach().requires_grad_(need_w)
            out = cauchy_keops(lv, z.detach(), lw)
        ctx.graph = (out, lv, lw)
        return out.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        v, z, w = ctx.saved_tensors
        out, lv, lw = ctx.graph
        ctx.graph = None
        need_v, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        leaves = [t for t, need in ((lv, need_v), (lw, need_w)) if need]
        if not leaves:
            return None, None, None
        try:
            grads = list(torch.autograd.grad(out, leaves, g))
        except Exception as exc:  # noqa: BLE001  (the gradient formula failed to compile or run)
            disable(f"{type(exc).__name__} in the backward on {v.device}")
            from .chunked import cauchy_chunked  # noqa: PLC0415

            with torch.enable_grad():
                cv = v.detach().requires_grad_(need_v)
                cw = w.detach().requires_grad_(need_w)
                ref = cauchy_chunked(cv, z.detach(), cw)
                grads = list(torch.autograd.grad(ref, [t for t, n in ((cv, need_v), (cw, need_w)) if n], g))
        gv = grads.pop(0) if need_v else None
        gw = grads.pop(0) if need_w else None
        return gv, None, gw


def cauchy_keops_with_fallback(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``backend="auto"``'s keops path: a failing backward falls back to chunked (see above)."""
    if torch.is_grad_enabled() and (v.requires_grad or w.requires_grad):
        return _KeopsWithFallback.apply(v, z, w)
    return cauchy_keops(v, z, w)
