"""The S4 layer: SSM convolution (FFT) + D skip + activation + output projection, and its step.

Convolution mode runs the SSM as a causal FFT convolution with its kernel; step mode runs the
same linear system as a recurrence. They compute the same function: that equivalence is what
makes fast autoregressive generation correct, and the tests hold it to float tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import DPLRKernel, S4DKernel


def fft_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c >= n: FFT-friendly sizes without doubling to the next power of two."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y_t = Σ_{l<=t} k_l u_{t-l}. u (B, L, H), k (H, L) -> (B, L, H); float32 FFTs always."""
    L = u.shape[1]
    n = fft_size(2 * L)
    uf = torch.fft.rfft(u.float(), n=n, dim=1)
    kf = torch.fft.rfft(k.float(), n=n, dim=-1).transpose(0, 1)  # (n//2+1, H)
    return torch.fft.irfft(uf * kf, n=n, dim=1)[:, :L]


class S4(nn.Module):
    """One S4 layer on (B, L, H) sequences."""

    def __init__(self, d_model: int, d_state: int = 64, l_max: int = 16384, kernel: str = "dplr",
                 s4d_init: str = "inv", n_ssm: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 glu: bool = True, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        H = d_model
        if kernel == "dplr":
            self.kernel = DPLRKernel(H, d_state, l_max=l_max, n_ssm=n_ssm, dt_min=dt_min, dt_max=dt_max,
                                     backend=backend)
        elif kernel == "s4d":
            self.kernel = S4DKernel(H, d_state, init=s4d_init, n_ssm=n_ssm, dt_min=dt_min, dt_max=dt_max)
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
        self.D = nn.Parameter(torch.randn(H))
        self.glu = glu
        self.out = nn.Linear(H, 2 * H if glu else H)
        self.dropout = nn.Dropout(dropout)

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        y = self.out(self.dropout(F.gelu(y)))
        return F.glu(y, dim=-1) if self.glu else y

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        with torch.autocast(u.device.type, enabled=False):  # FFTs and the kernel stay in float32
            k = self.kernel(u.shape[1])
            y = causal_conv(u, k) + self.D * u.float()
        return self._post(y.to(u.dtype) if u.dtype != torch.float32 else y)

    # ---- step mode -------------------------------------------------------------------------
    @torch.no_grad()
    def step_setup(self, dtype=torch.complex64) -> dict:
        """Parameter-only constants of the recurrence, computed once per generation (float64 → dtype).

        y_t depends on x_{t-1} and u_t only, so the output readout is folded into the state update:
          σ = 2Re Σ conj(Q) x ;  y = 2Re Σ (C Ā) x + c_σ σ + (c_u + D) u ;  x ← Ā x + G σ + dB u
        """
        sp = self.kernel.step_params()
        C, Abar, dB = sp["C"], sp["dA"], sp["dB"]
        out = {"Abar": Abar.to(dtype), "dB": dB.to(dtype),
               "CA": (2 * C * Abar).to(dtype), "cu": (2 * (C * dB).sum(-1).real + self.D.double()).float()}
        if sp["G"] is not None:
            out.update(G=sp["G"].to(dtype), Q2=(2 * sp["Q"]).to(dtype),
                       cs=(2 * (C * sp["G"]).sum(-1).real).float())
        return out

    def default_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.kernel.H, self.kernel.N2, dtype=torch.complex64, device=device)

    def step(self, u: torch.Tensor, x: torch.Tensor, c: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, H) real, x (B, H, N2) complex -> (output (B, H), new state)."""
        uc = u.unsqueeze(-1)
        y = (x * c["CA"]).sum(-1).real + c["cu"] * u
        if "G" in c:
            sig = (x * c["Q2"].conj()).sum(-1, keepdim=True).real
            y = y + c["cs"] * sig.squeeze(-1)
            x = c["Abar"] * x + c["G"] * sig + c["dB"] * uc
        else:
            x = c["Abar"] * x + c["dB"] * uc
        return self._post(y), x
