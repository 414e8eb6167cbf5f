"""Benchmark the Cauchy backends: time, peak memory and error against a float64 reference.

    python -m bench.cauchy -l 64000 [--channels 64] [--state 64] [--backward]

Each backend runs in its own child process so its peak RSS is its own; a backend that would
not fit in memory is reported as skipped rather than taking the machine down.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import time
import warnings


def _inputs(H, N2, L, M, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    w = torch.complex(-torch.rand(H, N2, generator=g, dtype=torch.float64) - 0.1,
                      100 * torch.randn(H, N2, generator=g, dtype=torch.float64))
    v = torch.randn(H, M, N2, generator=g, dtype=torch.complex128)
    K = L // 2 + 1
    z = 2j * torch.tan(math.pi * torch.arange(K, dtype=torch.float64) / L).clamp(max=1e8)
    return v, z, w


def _child(backend, H, N2, L, M, backward, q):
    import torch

    from sashimi.cauchy import cauchy

    v, z, w = _inputs(H, N2, L, M)
    v32, z32, w32 = v.to(torch.complex64), z.to(torch.complex64), w.to(torch.complex64)
    # float64 arithmetic on the very same (complex64-rounded) inputs: measures each backend's
    # own error, not the conditioning of rounding z and w to complex64.
    ref = cauchy(v32.to(torch.complex128), z32.to(torch.complex128), w32.to(torch.complex128), "chunked")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if backward:
        v32.requires_grad_()
        w32.requires_grad_()
    cauchy(v32[:1, :, :2], z32[:8], w32[:1, :2], backend)  # warm-up / keops compile
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = cauchy(v32, z32, w32, backend)
        if backward:
            out.abs().sum().backward()
        times.append(time.perf_counter() - t0)
    err = (out.detach().to(torch.complex128) - ref)
    q.put({"time": min(times), "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
           "abs": err.abs().max().item(), "rel": (err.abs().max() / ref.abs().max()).item()})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.cauchy", description=__doc__.splitlines()[0])
    ap.add_argument("-l", "--length", type=int, default=64000, help="sequence length L (K = L/2+1 points)")
    ap.add_argument("--channels", type=int, default=64, help="H")
    ap.add_argument("--state", type=int, default=64, help="N (N/2 stored conjugate pairs)")
    ap.add_argument("--numerators", type=int, default=4, help="M (the DPLR kernel uses 4)")
    ap.add_argument("--backward", action="store_true", help="time forward + backward")
    ap.add_argument("--backends", default="naive,chunked,keops")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args(argv)
    os.environ.setdefault("KEOPS_CACHE_FOLDER", os.path.join(os.getcwd(), ".keops_cache"))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    H, N2, L, M = args.channels, args.state // 2, args.length, args.numerators
    K = L // 2 + 1
    print(f"Cauchy kernel: H={H} channels, N={args.state} (N/2={N2} conjugate pairs), M={M} numerators, "
          f"L={L} (K={K} points), complex64, {'forward+backward' if args.backward else 'forward'}")
    print("reference: the same complex64 inputs evaluated in complex128 (chunked backend)")
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**20
    ctx = mp.get_context("spawn")
    print(f"{'backend':<9} {'time (s)':>9} {'peak MB':>9} {'max abs err':>12} {'max rel err':>12}")
    for backend in args.backends.split(","):
        if backend == "naive":
            need = H * M * N2 * K * 8 * 4 / 2**20 * (3 if args.backward else 1)
            if need > 0.6 * avail:
                print(f"{backend:<9} skipped: needs ~{need / 1024:.1f} GB of {avail / 1024:.1f} GB free "
                      f"(O(H·M·N·L) memory)")
                continue
        if backend == "keops":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from sashimi.cauchy import keops_available

                if not keops_available():
                    print(f"{backend:<9} unavailable (no pykeops or no compiler)")
                    continue
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(backend, H, N2, L, M, args.backward, q))
        p.start()
        p.join()
        if p.exitcode != 0 or q.empty():
            print(f"{backend:<9} failed (exit code {p.exitcode}; out of memory?)")
            continue
        r = q.get()
        verdict = "ok" if r["rel"] < 1e-5 else "ABOVE 1e-5"
        print(f"{backend:<9} {r['time']:>9.3f} {r['peak_mb']:>9.0f} {r['abs']:>12.2e} {r['rel']:>12.2e}  {verdict}")
    print("agreement target: max relative error < 1e-5 against float64 for every backend")


if __name__ == "__main__":
    main()
