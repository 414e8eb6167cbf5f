"""Optimiser parameter groups as the paper trains S4: the SSM's A, B and Δ get their own
learning rate and no weight decay (decaying them distorts the HiPPO dynamics)."""
from __future__ import annotations

import torch

# Parameters registered with this attribute set to a dict {"lr": ..., "weight_decay": 0.0}
# (S4 kernels mark Λ, P, B and log Δ) are put in the SSM group.
SSM_ATTR = "_ssm_optim"


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, ssm_lr: float) -> list[dict]:
    ssm, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if getattr(p, SSM_ATTR, False):
            ssm.append(p)
        elif p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
        {"params": ssm, "lr": ssm_lr, "weight_decay": 0.0, "name": "ssm"},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, lr: float = 4e-3, weight_decay: float = 0.0,
                   ssm_lr: float = 1e-3, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, ssm_lr), lr=lr, betas=betas)
