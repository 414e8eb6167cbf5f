"""HiPPO-LegS and its normal-plus-low-rank (NPLR) factorisation; S4D diagonal initialisations.

Everything here is float64: the factorisation is numerically delicate and done once at init.
"""
from __future__ import annotations

import math

import torch


def legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A, B): A_nk = -sqrt((2n+1)(2k+1)) for n > k, -(n+1) for n = k, 0 above."""
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
    return A, q.clone()


def legs_low_rank(N: int) -> torch.Tensor:
    """P_n = sqrt(n + 1/2): A + P P^T is normal (skew-symmetric plus a multiple of I)."""
    return torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)


def nplr(N: int) -> dict[str, torch.Tensor]:
    """Diagonalise A + PP^T = V Λ V* (float64) so that A = V (Λ - P̃ P̃*) V*.

    Returns the N/2 eigenvalues with non-negative imaginary part (their conjugates are implied)
    and the matching columns of P̃ = V*P and B̃ = V*B, plus the full V (for tests).
    """
    if N % 2:
        raise ValueError(f"N must be even, got {N}")
    A, B = legs(N)
    P = legs_low_rank(N)
    S = A + P[:, None] * P[None, :]
    # S = -1/2 I + skew-symmetric: its eigenvalues are -1/2 + i·(those of the skew part), exactly.
    skew = S + 0.5 * torch.eye(N, dtype=torch.float64)
    evals, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # Hermitian: i·skew eigen-decomposition
    lam = -0.5 + 1j * evals  # eigenvalues of S
    order = torch.argsort(evals, descending=True)
    lam, V = lam[order], V[:, order]
    half = N // 2
    # Keep the positive-imaginary half; the rest are their conjugates.
    Vh = V[:, :half]
    return {
        "Lambda": lam[:half],
        "P": Vh.conj().T @ P.to(torch.complex128),
        "B": Vh.conj().T @ B.to(torch.complex128),
        "V": V,
        "lambda_full": lam,
    }


def s4d_lin(N: int) -> torch.Tensor:
    """S4D-Lin: Λ_n = -1/2 + iπn for the N/2 stored modes."""
    n = torch.arange(N // 2, dtype=torch.float64)
    return -0.5 + 1j * math.pi * n


def s4d_inv(N: int) -> torch.Tensor:
    """S4D-Inv: Λ_n = -1/2 + i(N/π)(N/(2n+1) - 1)."""
    n = torch.arange(N // 2, dtype=torch.float64)
    return -0.5 + 1j * (N / math.pi) * (N / (2 * n + 1) - 1)
