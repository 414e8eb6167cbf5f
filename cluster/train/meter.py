"""Throughput and loss bookkeeping for the trainer: a window per logging interval, totals per attempt
(the first step excluded: it includes warm-up), and the process's memory. The trainer only hands
numbers in; TensorBoard scalars and Ray metrics come out.

Loss and gradient norm stay on the device: each step adds them to a device tensor without waiting for
the GPU, and the window is read back (one host sync) only when it is logged. Throughput is counted in
clips (sequences) and in audio samples (tokens: clips x crop length), the figure audio papers quote."""
from __future__ import annotations

import os
import resource
import time

import torch


class StepMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.window = self._window()
        self.totals = {"time": 0.0, "data": 0.0, "steps": 0, "clips": 0, "audio": 0}
        self.first_step_unix: float | None = None

    def _window(self) -> dict:
        # sums: [loss, grad norm] over the window's finite steps, float64 on the device
        return {"time": 0.0, "data": 0.0, "steps": 0, "skipped": 0, "clips": 0, "audio": 0,
                "sums": torch.zeros(2, dtype=torch.float64, device=self.device)}

    def add(self, seconds: float, data_wait: float, clips: int, audio_samples: int, loss: torch.Tensor,
            grad_norm: torch.Tensor, skipped: bool) -> bool:
        """Record one optimiser step: `clips` and `audio_samples` over all ranks, `loss` and `grad_norm`
        0-d device tensors (not read here). True if it was this attempt's first step."""
        first = self.first_step_unix is None
        step = {"time": seconds, "data": data_wait, "steps": 1, "clips": clips, "audio": audio_samples}
        for counts in ([self.window] if first else [self.window, self.totals]):
            for k, v in step.items():
                counts[k] += v
        if first:
            self.first_step_unix = time.time()
        w = self.window
        w["skipped"] += int(skipped)
        if not skipped:  # skipped (non-finite) steps do not enter the means
            w["sums"] += torch.stack([loss.detach(), grad_norm.detach()]).to(torch.float64)
        return first

    def take_window(self) -> dict:
        """Mean loss and gradient norm (finite steps), clips/s, audio samples/s, step time and data wait
        since the last call; starts a new window. The one host sync of a logging interval."""
        w, self.window = self.window, self._window()
        n, n_ok = w["steps"], w["steps"] - w["skipped"]
        loss, grad_norm = w["sums"].tolist()
        seconds = max(w["time"], 1e-9)
        return {"loss": loss / n_ok if n_ok else float("nan"), "grad_norm": grad_norm / n_ok if n_ok else float("nan"),
                "clips_per_s": w["clips"] / seconds, "audio_samples_per_s": w["audio"] / seconds,
                "step_time_s": w["time"] / n, "data_wait_s": w["data"] / n}

    def attempt_metrics(self) -> dict:
        """Ray metrics: when the first step finished, and steady-state throughput of this attempt."""
        out = {"first_step_unix": self.first_step_unix}
        t = self.totals
        if t["steps"]:
            out["perf_clips_per_s"] = t["clips"] / t["time"]
            out["perf_audio_samples_per_s"] = t["audio"] / t["time"]
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
