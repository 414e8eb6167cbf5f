"""DPLR and S4D kernels against brute-force float64 K_l = C·dA^l·dB."""
import pytest
import torch

from sashimi.kernels import DPLRKernel, S4DKernel

# complex64 kernel vs float64 brute force, relative to max |K|.
KERNEL_TOL = 2e-6


def brute_kernel(dA, dB, C, L):
    out, x = [], dB.clone()
    for _ in range(L):
        out.append((C * x).sum(-1))
        x = (dA @ x.unsqueeze(-1)).squeeze(-1)
    K = torch.stack(out, -1)
    assert K.imag.abs().max() < 1e-10 * K.abs().max()  # conjugate completion makes the system real
    return K.real


def _perturbed_dplr(l_max, H=3, N=16):
    k = DPLRKernel(H, N, l_max=l_max, dt_min=1e-2, dt_max=2e-1)
    with torch.no_grad():  # move off the HiPPO init so the test covers trained-looking parameters
        k.C.normal_()
        k.P.add_(0.2 * torch.randn_like(k.P))
        k.B.add_(0.2 * torch.randn_like(k.B))
    return k


@pytest.mark.parametrize("l_max", [64, 63, 200])
def test_dplr_kernel_matches_brute_force(l_max):
    k = _perturbed_dplr(l_max)
    dA, dB, C = k.dense_system()
    ref = brute_kernel(dA, dB, C, 2 * l_max + 5)
    scale = ref.abs().max()
    for L in (1, l_max // 3, l_max):  # shorter lengths are prefixes of the l_max kernel
        assert (k(L).double() - ref[:, :L]).abs().max() / scale < KERNEL_TOL
    L = 2 * l_max + 5  # longer than l_max: re-targeted exactly, no state kept
    assert (k(L).double() - ref[:, :L]).abs().max() / scale < KERNEL_TOL
    assert (k(l_max).double() - ref[:, :l_max]).abs().max() / scale < KERNEL_TOL


@pytest.mark.parametrize("init", ["inv", "lin"])
def test_s4d_kernel_matches_brute_force(init):
    k = S4DKernel(3, 16, init=init, dt_min=1e-2, dt_max=1e-1)
    dA, dB, C = k.dense_system()
    ref = brute_kernel(dA, dB, C, 300)
    for L in (1, 17, 300):
        assert (k(L).double() - ref[:, :L]).abs().max() / ref.abs().max() < KERNEL_TOL


def test_dplr_step_params_reproduce_dense_system():
    """The O(N) structured step must equal the dense bilinear recurrence (float64)."""
    k = _perturbed_dplr(50)
    dA, dB, C = k.dense_system()
    sp = k.step_params()
    u = torch.randn(120, dtype=torch.float64)
    x = torch.zeros(3, 8, dtype=torch.complex128)
    xd = torch.zeros(3, 16, dtype=torch.complex128)
    for t in range(120):
        sig = 2 * (sp["Q"].conj() * x).sum(-1, keepdim=True).real
        x = sp["dA"] * x + sp["G"] * sig + sp["dB"] * u[t]
        xd = (dA @ xd.unsqueeze(-1)).squeeze(-1) + dB * u[t]
        y, yd = 2 * (sp["C"] * x).sum(-1).real, (C * xd).sum(-1).real
        assert (y - yd).abs().max() < 1e-10 * (1 + yd.abs().max())


def test_stability_constraint():
    """Re Λ = -exp(·) stays negative whatever the optimiser does to the raw parameter."""
    k = DPLRKernel(2, 8, l_max=16)
    with torch.no_grad():
        k.log_neg_re.fill_(-30.0)
    assert (k.Lambda().real < 0).all()
