"""Learning-rate schedule: linear warmup, then constant / cosine / ReduceLROnPlateau on val NLL.

One small object instead of chaining torch schedulers, because torch's ReduceLROnPlateau and a
warmup LambdaLR both write `group["lr"]` and fight; here lr = base_lr * warmup(step) * shape(step)
* plateau_scale, so the state is three numbers and a resumed run sets exactly the same lrs."""
from __future__ import annotations

import math


class LRSchedule:
    def __init__(self, optimizer, kind: str, max_steps: int, warmup_steps: int = 0, factor: float = 0.2,
                 patience: int = 2, threshold: float = 1e-4, min_scale: float = 0.0):
        if kind not in ("plateau", "cosine", "constant"):
            raise ValueError(f"schedule.kind: unknown {kind!r}")
        self.opt = optimizer
        self.kind, self.max_steps, self.warmup = kind, max_steps, warmup_steps
        self.factor, self.patience, self.threshold, self.min_scale = factor, patience, threshold, min_scale
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evals = 0
        self.apply(0)

    def scale(self, step: int) -> float:
        """Multiplier for the update that follows `step` completed optimiser steps."""
        s = 1.0
        if self.warmup and step < self.warmup:
            s *= (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.max_steps - self.warmup)
            t = min(1.0, max(0, step - self.warmup) / span)
            s *= self.min_scale + (1 - self.min_scale) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            s *= self.plateau_scale
        return s

    def apply(self, step: int) -> None:
        s = self.scale(step)
        for g, base in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = base * s

    def observe(self, val_nll: float) -> bool:
        """Feed an evaluation result (plateau only); True when the lr was just reduced."""
        if self.kind != "plateau" or not math.isfinite(val_nll):
            return False
        if val_nll < self.best * (1 - self.threshold):
            self.best, self.bad_evals = val_nll, 0
            return False
        self.bad_evals += 1
        if self.bad_evals > self.patience:
            self.plateau_scale = max(self.min_scale, self.plateau_scale * self.factor)
            self.bad_evals = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"plateau_scale": float(self.plateau_scale), "best": float(self.best),
                "bad_evals": int(self.bad_evals), "base_lrs": [float(x) for x in self.base_lrs]}

    def load_state_dict(self, d: dict) -> None:
        self.plateau_scale, self.best, self.bad_evals = d["plateau_scale"], d["best"], d["bad_evals"]
        self.base_lrs = list(d["base_lrs"])
