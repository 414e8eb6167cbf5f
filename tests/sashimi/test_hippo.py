import math

import torch

from sashimi import hippo


def test_nplr_reconstructs_legs():
    """V (Λ - P̃P̃*) V* with the conjugate half implied must give back HiPPO-LegS (float64)."""
    for N in (8, 64):
        A, _ = hippo.legs(N)
        d = hippo.nplr(N)
        Vh = d["V"][:, : N // 2]
        V = torch.cat([Vh, Vh.conj()], dim=1)
        lam = torch.cat([d["Lambda"], d["Lambda"].conj()])
        P = torch.cat([d["P"], d["P"].conj()])
        rebuilt = V @ (torch.diag(lam) - P[:, None] * P.conj()[None, :]) @ V.conj().T
        scale = A.abs().max()
        assert (rebuilt - A).abs().max() / scale < 1e-8  # float64 eigendecomposition, N <= 64
        assert rebuilt.imag.abs().max() / scale < 1e-8


def test_legs_structure_and_stability():
    A, B = hippo.legs(4)
    assert A[2, 0] == -math.sqrt(5 * 1) and A[1, 1] == -2 and A[0, 1] == 0
    assert torch.allclose(B, torch.sqrt(torch.tensor([1.0, 3, 5, 7], dtype=torch.float64)))
    assert (hippo.nplr(64)["Lambda"].real < 0).all()


def test_s4d_inits():
    lin, inv = hippo.s4d_lin(8), hippo.s4d_inv(8)
    assert torch.allclose(lin.imag, math.pi * torch.arange(4, dtype=torch.float64))
    assert torch.allclose(inv.imag[0], torch.tensor(8 / math.pi * 7, dtype=torch.float64))
    assert (lin.real == -0.5).all() and (inv.real == -0.5).all()
