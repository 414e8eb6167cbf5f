"""Numeric precision of a training run: `training.precision` (fp32 | bf16 | fp16) and `training.tf32`.

bf16 autocasts to bfloat16, whose exponent range is fp32's, so no loss scaling is needed. fp16 autocasts
to float16 and scales the loss with a `torch.amp.GradScaler`: small gradients survive float16 that way,
and a step whose scaled gradients overflowed is skipped while the scale is halved. The S4 kernels and
FFTs run in float32 under either (sashimi.s4 turns autocast off around them).

Without CUDA, bf16 and fp16 fall back to fp32 with one log line: a job's reduced precision is a GPU
recipe, and the same job run on a CPU (a test, a debugging session) trains as it always did. TF32 (fp32 matmuls and convolutions on
Ampere and newer tensor cores, 10-bit mantissa products with fp32 accumulation) is on unless
`training.tf32: false`; the flags do nothing on older GPUs and are left alone without CUDA.
"""
from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """What one rank computes in: `autocast()` (a context manager factory, as the tasks take it) and
    `scaler` (a GradScaler, enabled only for fp16).

    `kind` is what runs; `Precision.for_device` picks it from what the job asked for. Constructing one
    directly forces a kind on any device (the tests run the fp16 path on the CPU, where torch has
    float16 autocast and GradScaler("cpu")). `scaler_args` go to the GradScaler (init_scale, ...)."""

    def __init__(self, kind: str, device: torch.device, **scaler_args):
        if kind not in ("fp32", *DTYPES):
            raise ValueError(f"training.precision: {kind!r} is not one of ['fp32', 'bf16', 'fp16']")
        self.kind, self.device = kind, torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=kind == "fp16", **scaler_args)

    @classmethod
    def for_device(cls, requested: str, device: torch.device) -> "Precision":
        """`requested` where CUDA runs it, else fp32 (the trainer says so)."""
        if requested != "fp32" and torch.device(device).type != "cuda":
            return cls("fp32", device)
        return cls(requested, device)

    def autocast(self):
        if self.kind == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.kind])

    def scaler_state(self) -> dict:
        """The loss scale and its growth counter ({} unless fp16): checkpointed for exact resume."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_scaler_state(self, state: dict | None) -> None:
        if self.scaler.is_enabled() and state:
            self.scaler.load_state_dict(state)


def set_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 matmuls/convolutions on CUDA as `training.tf32` says (a process-wide setting)."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")
