"""Benchmark the SSM kernels alone: forward + backward time and peak memory, S4D vs DPLR.

    python -m bench.kernels [--lengths 4096,16000,128000] [--channels 64] [--state 64]

Implementations (one kernel layer of H channels, N states, float32 result, gradient of <G, K>):
  dplr        DPLRKernel (Cauchy sums + Woodbury at the roots of unity, chunked backend on CPU)
  s4d         S4DKernel as shipped (blocked Vandermonde, sashimi.vandermonde)
  s4d-old     the previous S4DKernel.forward, kept here for the comparison: the whole
              (H, N/2, L) complex64 Vandermonde matrix, kept by autograd for backward
  s4d-cauchy  the other route of issue 15, measured and not shipped: the truncated generating
              function as a sum of simple poles at the L-th roots of unity ω,
              Σ_l K_l ω^l = Σ_full C dB (1 - dA^L) / (1 - dA ω), through the chunked Cauchy
              backend, then an inverse FFT
Each (implementation, L) runs in its own child process, so its peak RSS (above the RSS after
building the module) is its own; runs are interleaved (repeat, length, implementation) so a
change in machine load hits all implementations alike. A run that would not fit in memory is
skipped. The error column compares the S4D variants with the float64 kernel of the same
parameters (the blocked product in float64, exact to ~1e-15 by tests/sashimi/test_s4d_kernel.py).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import time

IMPLS = ("dplr", "s4d", "s4d-old", "s4d-cauchy")


def s4d_vandermonde_old(k, L: int):
    """The S4D forward before issue 15, verbatim in effect (Δ and Λ formed in float32)."""
    import torch

    dt = k.dt(torch.float32)[:, None]
    Lam = k.Lambda(torch.complex64)
    dtlam = dt * Lam
    dB = (torch.exp(dtlam) - 1) / Lam * k._per_channel(torch.view_as_complex(k.B))
    vander = torch.exp(dtlam.unsqueeze(-1) * torch.arange(L, device=dB.device))  # (H, N2, L)
    return 2 * torch.einsum("hn,hnl->hl", k.Ct() * dB, vander).real


def s4d_cauchy(k, L: int):
    """Route (a): K̂(ω_k) = Σ_full c'/(1 - dA ω_k), c' = C dB (1 - dA^L), ω_k = exp(-2πik/L), K = irfft.

    1/(1 - dA ω) = (-1/dA) / (ω - 1/dA) is a Cauchy term v/(z - w); with dA ≈ 1 both ω and 1/dA sit
    near 1, so the difference is taken between shifted points z = ω - 1 and w = 1/dA - 1 =
    expm1(-ΔΛ), each accurate to relative rounding (z - w itself unchanged). The conjugate mode is
    the backend's implied conjugate term: v̄/(z - w̄). Factors in float64, the Cauchy sum in complex64.
    """
    import torch

    from sashimi.cauchy import cauchy

    dtlam, dA, dB = k._discrete(torch.complex128)
    v = -k.Ct(torch.complex128) * dB * -torch.expm1(dtlam * L) / dA
    w = torch.expm1(-dtlam)
    theta = 2 * math.pi * torch.arange(L // 2 + 1, dtype=torch.float64) / L
    z = torch.expm1(-1j * theta.to(torch.complex128))
    r = cauchy(v.to(torch.complex64).unsqueeze(1), z.to(torch.complex64), w.to(torch.complex64), "chunked")
    return torch.fft.irfft(r[:, 0], n=L)


def _build(impl, H, N, L):
    import torch

    from sashimi.kernels import DPLRKernel, S4DKernel

    torch.manual_seed(0)
    if impl == "dplr":
        k = DPLRKernel(H, N, l_max=L)
        return k, lambda n: k(n)
    k = S4DKernel(H, N)
    fn = {"s4d": lambda n: k(n), "s4d-old": lambda n: s4d_vandermonde_old(k, n),
          "s4d-cauchy": lambda n: s4d_cauchy(k, n)}[impl]
    return k, fn


def _child(impl, H, N, L, iters, threads, q):
    import torch

    from sashimi.vandermonde import vandermonde

    torch.set_num_threads(threads)
    k, fn = _build(impl, H, N, L)
    G = torch.randn(H, L, generator=torch.Generator().manual_seed(1))
    fn(64).sum().backward()  # warm-up: thread pools, allocator
    k.zero_grad(set_to_none=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, fwd = [], []
    for _ in range(iters):
        k.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        K = fn(L)
        t1 = time.perf_counter()
        K.backward(G)
        times.append(time.perf_counter() - t0)
        fwd.append(t1 - t0)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    err = None
    if impl != "dplr":
        with torch.no_grad():
            dtlam, _, dB = k._discrete(torch.complex128)
            ref = vandermonde(k.Ct(torch.complex128) * dB, dtlam, L, dtype=torch.float64)
            err = ((K.detach().double() - ref).abs().max() / ref.abs().max()).item()
    q.put({"time": min(times), "fwd": min(fwd), "peak_mb": peak, "err": err})


def _fits(impl, H, N, L) -> tuple[bool, float]:
    """Rough need of the O(H·N·L) implementation (exp input, Vandermonde, their gradients)."""
    if impl != "s4d-old":
        return True, 0.0
    need = 4 * H * (N // 2) * L * 8 / 2**20
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**20
    return need < 0.6 * avail, need


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="4096,16000,128000")
    ap.add_argument("--channels", type=int, default=64, help="H")
    ap.add_argument("--state", type=int, default=64, help="N (N/2 stored conjugate pairs)")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--repeats", type=int, default=3, help="child processes per (impl, L), interleaved")
    ap.add_argument("--iters", type=int, default=3, help="timed forward+backward per child (best kept)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = ap.parse_args(argv)
    H, N = args.channels, args.state
    lengths = [int(x) for x in args.lengths.split(",") if x]
    impls = [x for x in args.impls.split(",") if x]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        ap.error(f"unknown implementations {sorted(unknown)}; choose from {IMPLS}")
    print(f"SSM kernel, one layer: H={H}, N={N}, float32 result, forward + backward of <G, K>, "
          f"{args.threads} threads, best of {args.iters} per process, {args.repeats} processes each")
    ctx = mp.get_context("spawn")
    results: dict = {}
    for rep in range(args.repeats):
        for L in lengths:
            for impl in impls:
                ok, need = _fits(impl, H, N, L)
                if not ok:
                    results.setdefault((impl, L), []).append(f"skipped: needs ~{need / 1024:.1f} GB")
                    continue
                q = ctx.Queue()
                p = ctx.Process(target=_child, args=(impl, H, N, L, args.iters, args.threads, q))
                p.start()
                p.join()
                r = q.get() if p.exitcode == 0 and not q.empty() else f"failed (exit code {p.exitcode})"
                results.setdefault((impl, L), []).append(r)
                if isinstance(r, dict):
                    print(f"  run {rep + 1} L={L:>6} {impl:<10} fwd+bwd {r['time']:.4f} s (fwd {r['fwd']:.4f}) "
                          f"peak {r['peak_mb']:.0f} MB", flush=True)
    print(f"{'L':>7} {'impl':<11} {'fwd+bwd (s)':>17} {'forward (s)':>17} {'peak MB':>13} {'max rel err':>11}")
    for L in lengths:
        for impl in impls:
            rs = results[(impl, L)]
            good = [r for r in rs if isinstance(r, dict)]
            if not good:
                print(f"{L:>7} {impl:<11} {rs[0]}")
                continue
            rng = lambda key, f: f"{f.format(min(r[key] for r in good))}–{f.format(max(r[key] for r in good))}"  # noqa: E731
            err = "–" if good[0]["err"] is None else f"{max(r['err'] for r in good):.1e}"
            print(f"{L:>7} {impl:<11} {rng('time', '{:.3f}'):>17} {rng('fwd', '{:.3f}'):>17} "
                  f"{rng('peak_mb', '{:.0f}'):>13} {err:>11}")


if __name__ == "__main__":
    main()
