"""SSM convolution kernels and their recurrent (step) parameters.

DPLRKernel (S4): A = Λ - P P* (HiPPO-LegS in its NPLR basis), bilinear discretisation.
S4DKernel: diagonal A, zero-order hold. Both store N/2 complex modes; conjugates are implied.

Both expose ``forward(L) -> K (H, L)`` and ``step_params() -> dict``. Nothing here caches
state tied to a sequence length: the DPLR kernel's C̃ = C(I - dA^l_max) is defined at the
fixed, configured ``l_max`` (part of the model config, so a checkpoint restores it exactly);
other lengths are derived from the parameters on every call.

Parameters are real tensors (complex ones as (..., 2) views) so DDP, AdamW and autocast
treat them uniformly; the SSM's Λ, P, B and log Δ are tagged for their own optimiser group.
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hippo
from .cauchy import cauchy
from .optim import SSM_ATTR
from .vandermonde import vandermonde


# Set inside ``weights_will_be_loaded()``: building a model whose state dict is about to be loaded.
_WEIGHTS_WILL_BE_LOADED = contextvars.ContextVar("sashimi_weights_will_be_loaded", default=False)


@contextlib.contextmanager
def weights_will_be_loaded():
    """Build models whose every parameter a state dict replaces next (loading a checkpoint): DPLR
    kernels then skip turning the drawn C into C̃, float64 matrix powers that take seconds for the
    paper model and whose result the loaded weights overwrite anyway."""
    token = _WEIGHTS_WILL_BE_LOADED.set(True)
    try:
        yield
    finally:
        _WEIGHTS_WILL_BE_LOADED.reset(token)


def _param(t: torch.Tensor, ssm: bool) -> nn.Parameter:
    p = nn.Parameter(torch.view_as_real(t.to(torch.complex64)).clone() if t.is_complex() else t.float().clone())
    if ssm:
        setattr(p, SSM_ATTR, True)
    return p


def _log_dt(H: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """Δ drawn log-uniformly in [dt_min, dt_max] per channel (the seed drew it uniformly)."""
    return torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


class _SSMKernel(nn.Module):
    """Shared storage: Λ with Re Λ = -exp(·) < 0 (always stable), C per channel, log Δ per channel."""

    def __init__(self, H: int, N: int, Lambda: torch.Tensor, n_ssm: int, dt_min: float, dt_max: float,
                 c_init_var: float = 1.0):
        super().__init__()
        self.H, self.N2, self.n_ssm = H, N // 2, n_ssm
        if H % n_ssm:
            raise ValueError(f"channels ({H}) must be a multiple of n_ssm ({n_ssm})")
        Lambda = Lambda.expand(n_ssm, -1)
        self.log_neg_re = _param(torch.log(-Lambda.real), ssm=True)
        self.im = _param(Lambda.imag, ssm=True)
        self.log_dt = _param(_log_dt(H, dt_min, dt_max), ssm=True)
        # C ~ CN(0, c_init_var): torch's complex normal has E|z|² = 1 (each part variance 1/2).
        # The paper's code draws C with unit variance (c_init_var = 1); DPLR then stores C̃ from it.
        self.C = _param(torch.randn(H, self.N2, dtype=torch.complex64) * math.sqrt(c_init_var), ssm=False)

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        """(n_ssm, N2) -> (H, N2): each SSM copy serves a contiguous group of channels."""
        return t.repeat_interleave(self.H // self.n_ssm, dim=0)

    def Lambda(self, dtype=torch.complex64) -> torch.Tensor:
        return self._per_channel(torch.complex(-torch.exp(self.log_neg_re), self.im)).to(dtype)

    def dt(self, dtype=torch.float32) -> torch.Tensor:
        return torch.exp(self.log_dt).to(dtype)

    def Ct(self, dtype=torch.complex64) -> torch.Tensor:
        return torch.view_as_complex(self.C).to(dtype)


class S4DKernel(_SSMKernel):
    """K_l = 2 Re Σ_n C_n dB_n exp(ΔΛ_n l): exact at every length.

    A blocked Vandermonde product (``sashimi.vandermonde``): memory O(H·N·√L), not O(H·N·L), and
    one float32 matmul for the O(H·N·L) work, so it is faster than the DPLR Cauchy path.
    """

    def __init__(self, H: int, N: int = 64, init: str = "inv", n_ssm: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, c_init_var: float = 1.0):
        Lambda = hippo.s4d_inv(N) if init == "inv" else hippo.s4d_lin(N)
        super().__init__(H, N, Lambda, n_ssm, dt_min, dt_max, c_init_var)
        self.B = _param(torch.ones(n_ssm, self.N2, dtype=torch.complex64), ssm=True)

    def _discrete(self, dtype):
        """(ΔΛ, dA = exp(ΔΛ), dB = (dA - 1)/Λ · B): zero-order hold.

        Δ = exp(log Δ) and Re Λ = -exp(·) are evaluated in ``dtype``'s precision: rounding Δ to
        float32 first shifts each phase Δ·Im Λ·l by ~6e-8 relative (4e-6 of max |K| at L = 64000)."""
        real = dtype.to_real()
        dt = torch.exp(self.log_dt.to(real))[:, None]
        Lam = self._per_channel(torch.complex(-torch.exp(self.log_neg_re.to(real)), self.im.to(real)))
        dtlam = dt * Lam
        dA = torch.exp(dtlam)
        dB = (dA - 1) / Lam * self._per_channel(torch.view_as_complex(self.B)).to(dtype)
        return dtlam, dA, dB

    def forward(self, L: int) -> torch.Tensor:
        # ΔΛ and C·dB in float64 (H·N values): the blocked factors then carry exact phases to
        # l ~ 1e5; the product itself is float32 (the result's dtype, as before).
        dtlam, _, dB = self._discrete(torch.complex128)
        return vandermonde(self.Ct(torch.complex128) * dB, dtlam, L, dtype=torch.float32)

    @torch.no_grad()
    def step_params(self) -> dict:
        _, dA, dB = self._discrete(torch.complex128)
        return {"dA": dA, "dB": dB, "C": self.Ct(torch.complex128), "G": None, "Q": None}

    @torch.no_grad()
    def dense_system(self):
        """Full-space (conjugates included) dA, dB, C in float64, for brute-force tests."""
        _, dA, dB = self._discrete(torch.complex128)
        C = self.Ct(torch.complex128)
        full = lambda t: torch.cat([t, t.conj()], dim=-1)  # noqa: E731
        return torch.diag_embed(full(dA)), full(dB), full(C)


def _woodbury(r: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """K̂(ω) = 2/(1+ω) · [k00 - k01·k10 / (1 + k11)] from the four Cauchy sums r (H, 4, K)."""
    return 2 / (1 + omega) * (r[:, 0] - r[:, 1] * r[:, 2] / (1 + r[:, 3]))


class DPLRKernel(_SSMKernel):
    """S4: Cauchy sums + Woodbury at the roots of unity of order l_max, then an inverse FFT.

    The generating function of the kernel truncated at l_max is
        K̂(ω) = 2/(1+ω) · [k00 - k01·k10 / (1 + k11)],  k_ab = Σ_full v_ab / (z - λ),
    z = (2/Δ)(1-ω)/(1+ω), with v00 = C̃B, v01 = C̃P, v10 = P̄B, v11 = P̄P and C̃ = C(I - dA^l_max).
    """

    def __init__(self, H: int, N: int = 64, l_max: int = 16384, n_ssm: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, backend: str = "auto",
                 c_init_var: float = 1.0, b_clip: float | None = 2.0):
        init = hippo.nplr(N)
        super().__init__(H, N, init["Lambda"], n_ssm, dt_min, dt_max, c_init_var)
        B = init["B"]
        if b_clip is not None:  # the paper's code clips Im(B̃) after the change of basis (B_clip = 2)
            B = torch.complex(B.real, B.imag.clamp(-b_clip, b_clip))
        self.P = _param(init["P"].expand(n_ssm, -1), ssm=True)
        self.B = _param(B.expand(n_ssm, -1), ssm=True)
        self.l_max = int(l_max)
        self.backend = backend
        if not _WEIGHTS_WILL_BE_LOADED.get():
            with torch.no_grad():  # the drawn C is the state-space C; the kernel stores C̃ = C(I - dA^l_max)
                dA, _ = self._dense()
                C = self._horizon(self.Ct(torch.complex128), dA, self.l_max)
                self.C.copy_(torch.view_as_real(C.to(torch.complex64)))

    def _PB(self, dtype):
        P = self._per_channel(torch.view_as_complex(self.P)).to(dtype)
        B = self._per_channel(torch.view_as_complex(self.B)).to(dtype)
        return P, B

    def _kernel_fft(self, M: int, Ct: torch.Tensor) -> torch.Tensor:
        """rfft-domain kernel (H, M//2+1) of the length-M truncated kernel whose C̃ is Ct."""
        dt = self.dt()
        P, B = self._PB(torch.complex64)
        w = dt[:, None] * self.Lambda()  # ΔΛ
        v = torch.stack([Ct * B, Ct * P, P.conj() * B, P.conj() * P], dim=1)  # (H, 4, N2)
        k = torch.arange(M // 2 + 1, device=dt.device, dtype=torch.float64)
        theta = math.pi * k / M
        nyquist = M % 2 == 0
        if nyquist:
            theta = theta[:-1]
        z = (2j * torch.tan(theta)).to(torch.complex64)  # z·Δ = 2(1-ω)/(1+ω) at ω = exp(-2πik/M)
        r = cauchy(v * dt[:, None, None], z, w, self.backend)  # (H, 4, K); Δ·Σ v/(z - ΔΛ), linear in v
        omega = torch.exp(-2j * theta).to(torch.complex64)
        # Elementwise and cheap: recomputed in backward rather than keeping five (H, K) temporaries.
        kf = checkpoint(_woodbury, r, omega, use_reentrant=False)
        if nyquist:  # ω = -1: K̂ = C̃ (I + dA)^{-1} dB = (Δ/2) Σ_full C̃B
            kf = torch.cat([kf, (dt * (Ct * B).sum(-1).real).to(kf.dtype)[:, None]], dim=-1)
        return kf

    def forward(self, L: int) -> torch.Tensor:
        if L <= self.l_max:
            kf = self._kernel_fft(self.l_max, self.Ct())
            return torch.fft.irfft(kf, n=self.l_max)[:, :L]
        # Longer than l_max: re-target C̃ to length L exactly (dense powers; rare and slower).
        Ct = self._retarget(L)
        return torch.fft.irfft(self._kernel_fft(L, Ct), n=L)

    def _dense(self, dtype=torch.complex128):
        """Full-space dA, dB (bilinear) for all channels: (H, N, N), (H, N)."""
        dt = self.dt(torch.float64)[:, None, None]
        Lam = self.Lambda(dtype)
        P, B = self._PB(dtype)
        full = lambda t: torch.cat([t, t.conj()], dim=-1)  # noqa: E731
        Pf, Bf = full(P), full(B)
        # M = I - Δ/2·A = diag(1 - Δ/2·Λ) + Δ/2·PP*, inverted by Woodbury (no dense solve); then
        # dA = M⁻¹(I + Δ/2·A) = M⁻¹(2I - M) = 2M⁻¹ - I and dB = M⁻¹·Δ·B.
        h = dt[..., 0] / 2
        R = 1 / (1 - h * full(Lam))
        RP = R * Pf
        Minv = torch.diag_embed(R) - h[..., None] * RP.unsqueeze(-1) * (Pf.conj() * R).unsqueeze(-2) / (
            1 + h * (Pf.conj() * RP).sum(-1, keepdim=True))[..., None]
        eye = torch.eye(Minv.shape[-1], dtype=dtype, device=Minv.device)
        return 2 * Minv - eye, (Minv @ (2 * h * Bf).unsqueeze(-1)).squeeze(-1)

    def _true_C(self, dA: torch.Tensor) -> torch.Tensor:
        """C = C̃ (I - dA^l_max)^{-1} in the full space (H, N)."""
        Ct = self.Ct(dA.dtype)
        Ctf = torch.cat([Ct, Ct.conj()], dim=-1)
        eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
        M = eye - torch.linalg.matrix_power(dA, self.l_max)
        return torch.linalg.solve(M.transpose(-1, -2), Ctf.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def _horizon(C: torch.Tensor, dA: torch.Tensor, L: int) -> torch.Tensor:
        """C (I - dA^L) for the stored half C (H, N/2) or the full-space C (H, N) -> stored half (H, N/2).

        The full-space system is conjugate-symmetric, so the result's second half is the conjugate
        of its first and only the stored half is returned."""
        n2 = dA.shape[-1] // 2
        if C.shape[-1] == n2:
            C = torch.cat([C, C.conj()], dim=-1)
        # The power in a real basis (4x cheaper than complex): T maps [x; conj x] to √2·[Re x; Im x],
        # so T dA T* is real and dA^L = T* (T dA T*)^L T.
        eye = torch.eye(n2, dtype=dA.dtype, device=dA.device)
        T = torch.cat([torch.cat([eye, eye], 1), torch.cat([-1j * eye, 1j * eye], 1)], 0) / math.sqrt(2)
        power = torch.linalg.matrix_power((T @ dA @ T.mH).real, L).to(dA.dtype)
        CT = C.unsqueeze(-2) @ T.mH
        return (C.unsqueeze(-2) - CT @ power @ T).squeeze(-2)[:, :n2]

    def _retarget(self, L: int) -> torch.Tensor:
        dA, _ = self._dense()
        return self._horizon(self._true_C(dA), dA, L).to(torch.complex64)

    @torch.no_grad()
    def dense_system(self):
        dA, dB = self._dense()
        return dA, dB, self._true_C(dA)

    @torch.no_grad()
    def step_params(self) -> dict:
        """Bilinear DPLR step in the stored half-space, exact and O(N) per step:

            σ = 2 Re Σ conj(Q)·x,   x' = Ā x + G σ + dB u,   y = 2 Re Σ C x' (+ D u outside)
        with R = 1/(1 - Δ/2 Λ), Ā = (1 + Δ/2 Λ)·R, g = 2/Δ + 2Re Σ|P|²R, G = -R P / g,
        Q = P·(1 + conj Ā), dB = Δ(R B - R P β/g), β = 2 Re Σ conj(P) R B.
        (Woodbury on I - Δ/2·A with A = Λ - PP* over the conjugate-completed space.)
        """
        dt = self.dt(torch.float64)[:, None]
        Lam = self.Lambda(torch.complex128)
        P, B = self._PB(torch.complex128)
        R = 1 / (1 - dt / 2 * Lam)
        Abar = (1 + dt / 2 * Lam) * R
        g = 2 / dt + 2 * (P.abs() ** 2 * R).sum(-1, keepdim=True).real
        beta = 2 * (P.conj() * R * B).sum(-1, keepdim=True).real
        dA, _ = self._dense()
        C = self._true_C(dA)[:, : self.N2]
        return {"dA": Abar, "dB": dt * (R * B - R * P * beta / g), "C": C,
                "G": -R * P / g, "Q": P * (1 + Abar.conj())}
