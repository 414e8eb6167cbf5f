"""Throughput and loss bookkeeping for the trainer: a window per logging interval, totals per attempt
(the first step excluded: it includes warm-up), and the process's memory. The trainer only hands
numbers in; TensorBoard scalars and Ray metrics come out."""
from __future__ import annotations

import os
import resource
import time

import torch


def _window() -> dict:
    return {"time": 0.0, "data": 0.0, "steps": 0, "skipped": 0, "loss": 0.0}


class StepMeter:
    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step  # global: batch per worker x accumulation x world size
        self.window = _window()
        self.totals = {"time": 0.0, "data": 0.0, "steps": 0}
        self.first_step_unix: float | None = None

    def add(self, seconds: float, data_wait: float, loss: float, skipped: bool) -> bool:
        """Record one optimiser step; True if it was this attempt's first."""
        first = self.first_step_unix is None
        if first:
            self.first_step_unix = time.time()
        else:
            self.totals["time"] += seconds
            self.totals["data"] += data_wait
            self.totals["steps"] += 1
        w = self.window
        w["time"] += seconds
        w["data"] += data_wait
        w["steps"] += 1
        w["skipped"] += int(skipped)
        w["loss"] += 0.0 if skipped else loss  # skipped (non-finite) steps do not enter the mean loss
        return first

    def take_window(self) -> dict:
        """Mean loss, samples/s, step time and data wait since the last call; starts a new window."""
        w, self.window = self.window, _window()
        n, n_ok = w["steps"], w["steps"] - w["skipped"]
        return {"loss": w["loss"] / n_ok if n_ok else float("nan"),
                "samples_per_s": n * self.samples_per_step / max(w["time"], 1e-9),
                "step_time_s": w["time"] / n, "data_wait_s": w["data"] / n}

    def attempt_metrics(self) -> dict:
        """Ray metrics: when the first step finished, and steady-state throughput of this attempt."""
        out = {"first_step_unix": self.first_step_unix}
        t = self.totals
        if t["steps"]:
            out["perf_samples_per_s"] = t["steps"] * self.samples_per_step / t["time"]
            out["perf_step_time_s"] = t["time"] / t["steps"]
            out["perf_data_wait_s_per_step"] = t["data"] / t["steps"]
        return out


def memory_metrics(device: torch.device) -> dict:
    out = {"memory/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    try:  # current RSS from /proc (Linux); no psutil dependency
        with open("/proc/self/statm") as f:
            out["memory/rss_mb"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    if device.type == "cuda":
        out["memory/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
