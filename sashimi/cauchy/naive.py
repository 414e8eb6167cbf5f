"""The formula as written: one broadcast over (..., M, N, K)."""
import torch


def cauchy_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    v = v.unsqueeze(-1)  # (..., M, N, 1)
    w = w.unsqueeze(-2).unsqueeze(-1)  # (..., 1, N, 1)
    return (v / (z - w) + v.conj() / (z - w.conj())).sum(dim=-2)
