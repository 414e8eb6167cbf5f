"""The S4 layer: SSM convolution (FFT) + D skip + activation + output projection, and its step.

Convolution mode runs the SSM as a causal FFT convolution with its kernel; step mode runs the
same linear system as a recurrence. They compute the same function: that equivalence is what
makes fast autoregressive generation correct, and the tests hold it to float tolerance.

A bidirectional layer (the non-causal SaShiMi of DiffWave+SaShiMi) has two kernels per channel,
the paper's checkpoints' form: the second runs over the time-reversed signal, each output gets
the D term, and the two are concatenated to 2H channels for the output projection. The reversal
never materialises: convolving the reversed signal and reversing back is a correlation, whose
spectrum is the conjugate kernel spectrum times the input's, so both directions share one FFT
of the input. It has no step mode (its output reads the future).
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


class _FFTConv(torch.autograd.Function):
    """Convolution by FFT that saves only the real inputs for backward.

    Autograd would keep both complex spectra (4x the bytes of u and k); recomputing them costs
    two FFTs per layer and saves ~220 MB at L = 16000 on the paper model. Backward is the
    adjoint: correlations with the output gradient, computed with conjugated spectra.

    u (B, H, L); k (S·H, L): S = 1, a causal kernel per channel; S = 2 (two-sided), the causal
    kernels then the anti-causal ones, y_t = Σ_{m>=0} k_m u_{t+m}, whose spectrum is the
    conjugate of k's. Output (B, S·H, L). Zero padding to >= 2L keeps both free of wrap-around.
    """

    @staticmethod
    def forward(ctx, u, k, two_sided: bool = False):
        L = u.shape[-1]
        n = fft_size(2 * L)
        ctx.save_for_backward(u, k)
        ctx.two_sided = two_sided
        yf = torch.fft.rfft(u, n=n).unsqueeze(1) * _spectrum(k, n, two_sided)  # (B, S, H, n/2+1)
        return torch.fft.irfft(yf.flatten(1, 2), n=n)[..., :L]

    @staticmethod
    def backward(ctx, g):
        u, k = ctx.saved_tensors
        L = u.shape[-1]
        n = fft_size(2 * L)
        gf = torch.fft.rfft(g, n=n).unflatten(1, (2 if ctx.two_sided else 1, -1))  # (B, S, H, n/2+1)
        gu = gk = None
        if ctx.needs_input_grad[0]:
            gu = torch.fft.irfft((gf * _spectrum(k, n, ctx.two_sided).conj()).sum(1), n=n)[..., :L]
        if ctx.needs_input_grad[1]:
            cross = (gf * torch.fft.rfft(u, n=n).conj().unsqueeze(1)).sum(0)  # (S, H, n/2+1)
            if ctx.two_sided:  # ∂/∂k of a correlation is the correlation the other way: the conjugate
                cross = torch.stack([cross[0], cross[1].conj()])
            gk = torch.fft.irfft(cross.flatten(0, 1), n=n)[..., :L]
        return gu, gk, None


def _spectrum(k: torch.Tensor, n: int, two_sided: bool) -> torch.Tensor:
    """Kernels (S·H, L) -> their spectra (S, H, n/2+1) as multipliers of the input's spectrum: the
    anti-causal half (two-sided) conjugated, which makes its product a correlation."""
    kf = torch.fft.rfft(k, n=n)
    if not two_sided:
        return kf.unsqueeze(0)
    kf = kf.unflatten(0, (2, -1))
    return torch.stack([kf[0], kf[1].conj()])


def causal_conv(u: torch.Tensor, k: torch.Tensor, two_sided: bool = False) -> torch.Tensor:
    """y_t = Σ_{l<=t} k_l u_{t-l}. u (B, L, H), k (H, L) -> (B, L, H); float32 FFTs always.

    ``two_sided``: k (2H, L) -> (B, L, 2H), the causal outputs of k[:H] and then the anti-causal
    y_t = Σ_{m>=0} k[H:]_m u_{t+m} (k[H:] run over the time-reversed signal, reversed back)."""
    # FFTs along a contiguous last axis run 2-3x faster than strided ones, transposes included.
    return _FFTConv.apply(u.float().transpose(1, 2).contiguous(), k.float(), two_sided).transpose(1, 2)


class S4(nn.Module):
    """One S4 layer on (B, L, H) sequences."""

    def __init__(self, d_model: int, d_state: int = 64, l_max: int = 16384, kernel: str = "dplr",
                 s4d_init: str = "inv", n_ssm: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 glu: bool = True, dropout: float = 0.0, backend: str = "auto", c_init_var: float = 1.0,
                 b_clip: float | None = 2.0, bidirectional: bool = False):
        super().__init__()
        H = d_model
        # Bidirectional: one kernel module for both directions, 2H channels (forward ones first), so
        # both are computed by one Cauchy / Vandermonde call; n_ssm groups are over those 2H channels.
        C = 2 * H if bidirectional else H
        if kernel == "dplr":
            self.kernel = DPLRKernel(C, d_state, l_max=l_max, n_ssm=n_ssm, dt_min=dt_min, dt_max=dt_max,
                                     backend=backend, c_init_var=c_init_var, b_clip=b_clip)
        elif kernel == "s4d":
            self.kernel = S4DKernel(C, d_state, init=s4d_init, n_ssm=n_ssm, dt_min=dt_min, dt_max=dt_max,
                                    c_init_var=c_init_var)
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
        self.bidirectional = bidirectional
        self.D = nn.Parameter(torch.randn(H))  # one D per channel, added to both directions (as the paper's code)
        self.glu = glu
        self.out = nn.Linear(C, 2 * H if glu else H)
        self.dropout = nn.Dropout(dropout)

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        """GELU, dropout, output projection (+ GLU): the paper's S4 layer, dropout before the projection."""
        y = self.out(self.dropout(F.gelu(y)))
        return F.glu(y, dim=-1) if self.glu else y

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        with torch.autocast(u.device.type, enabled=False):  # FFTs and the kernel stay in float32
            y = self.ssm(u)
        return self._post(y.to(u.dtype) if u.dtype != torch.float32 else y)

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """The linear part: (B, L, H) -> the kernel convolution plus D·u, (B, L, H), or (B, L, 2H)
        bidirectional (forward outputs, then backward), in float32."""
        k = self.kernel(u.shape[1])
        if not self.bidirectional:
            return causal_conv(u, k) + self.D * u.float()
        y = causal_conv(u, k, two_sided=True)
        return (y.unflatten(-1, (2, -1)) + (self.D * u.float()).unsqueeze(-2)).flatten(-2)

    # ---- step mode -------------------------------------------------------------------------
    @torch.no_grad()
    def step_setup(self) -> dict:
        """Parameter-only constants of the recurrence, computed once per generation in float64.

        The state is real: x = (Re, Im) of the N/2 stored modes, shape (B, H, 2, N/2), so the
        step is plain real arithmetic (and Inductor can fuse it). y_t depends on x_{t-1}
        and u_t only, so the readout is folded into the update:
          [y0, σ] = W · x,  y = y0 + c_σ σ + c_u u,  x ← Ā x + G σ + dB u   (Ā: a 2×2 rotation-scale)
        with y0 = 2Re Σ C Ā x and, for DPLR only, σ = 2Re Σ conj(Q) x (the rank-1 Woodbury term).
        """
        if self.bidirectional:
            raise ValueError("a bidirectional S4 layer has no recurrent step: its outputs read the future")
        sp = self.kernel.step_params()
        C, Abar, dB = sp["C"], sp["dA"], sp["dB"]
        CA = 2 * C * Abar
        dplr = sp["G"] is not None
        Q2 = 2 * sp["Q"] if dplr else torch.zeros_like(C)
        G = sp["G"] if dplr else torch.zeros_like(C)
        W = torch.stack([torch.stack([CA.real, -CA.imag], 1), torch.stack([Q2.real, Q2.imag], 1)], 1)
        ri = lambda t: torch.stack([t.real, t.imag], 1).float()  # noqa: E731  (H, 2, N/2)
        ar, ai = Abar.real, Abar.imag  # x·Ā as (Re, Im) = x·[ar, ar] + flip(x)·[-ai, ai]
        return {"W": W.float(), "AR": torch.stack([ar, ar], 1).float(), "AI": torch.stack([-ai, ai], 1).float(),
                "G": ri(G), "dB": ri(dB), "cs": (2 * (C * G).sum(-1).real).float(),
                "cu": (2 * (C * dB).sum(-1).real + self.D.double()).float(), "dplr": dplr}

    def default_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.kernel.H, 2, self.kernel.N2, device=device)

    def readout(self, u: torch.Tensor, base: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
        """This step's output from the state-only part ``base`` (``state_terms``) and the input u (B, H)."""
        y = F.linear(F.gelu(torch.addcmul(base, cu, u)), self.out.weight, self.out.bias)  # _post at inference
        return F.glu(y, dim=-1) if self.glu else y

    def step(self, u: torch.Tensor, x: torch.Tensor, c: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, H), x (B, H, 2, N/2) -> (output (B, H), new state)."""
        pre, base = state_terms(x, c)
        return self.readout(u, base, c["cu"]), state_update(pre, c["dB"], u)


# The recurrence of step_setup split by what each part needs. Everything but the u terms depends on
# the previous state only, so a tier computes it for all its S4 layers at once, before its first
# layer runs (x stacked (k, B, H, 2, N/2), constants by ``stack_step_constants``): eager step mode at
# batch 1 is bound by the number of ops, and this leaves each layer two small ops of its own.

def state_terms(x: torch.Tensor, c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (Ā x + G σ, y0 + c_σ σ): the next state and this output without their u terms."""
    # W (.., H, 2, 2, N/2): rows y0 and σ; a mul-and-sum fuses under Inductor (a bmm would not).
    pre = torch.addcmul(x * c["AR"], x.flip(-2), c["AI"])
    if not c["dplr"]:
        return pre, (x * c["W"][..., 0, :, :]).sum((-1, -2))
    y0, sig = (x.unsqueeze(-3) * c["W"]).sum((-1, -2)).unbind(-1)
    pre.addcmul_(c["G"], sig[..., None, None])
    return pre, torch.addcmul(y0, c["cs"], sig)


def state_update(pre: torch.Tensor, dB: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x_t = (Ā x + G σ) + dB u_t, in place on ``pre``."""
    return pre.addcmul_(dB, u[..., None, None])


def stack_step_constants(consts: list[dict]) -> dict:
    """Several layers' ``step_setup`` constants stacked for ``state_terms`` over their stacked states:
    (k, 1, H, ...), the 1 broadcasting over the batch."""
    if len({c["dplr"] for c in consts}) != 1:
        raise ValueError("a tier's S4 layers must all be DPLR or all diagonal")
    out = {k: torch.stack([c[k] for c in consts]).unsqueeze(1) for k, v in consts[0].items()
           if isinstance(v, torch.Tensor)}
    out["dplr"] = consts[0]["dplr"]
    return out
