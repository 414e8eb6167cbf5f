"""Autoregressive sampling in multi-rate step mode.

Small per-step tensors make OpenMP's thread barriers cost more than the arithmetic, so step
mode runs with ``threads`` intra-op threads (1 by default) and restores the setting after.
"""
from __future__ import annotations

import contextlib

import torch

from .metrics import shift_inputs
from .model import SaShiMi, SaShiMiState
from .quantize import zero_class


def _compile_settings(device: torch.device):
    """Inductor settings for step mode: weights frozen as constants and, on the CPU, C++ GEMM
    templates for the tiny matrix-vector products (no per-call dispatch into BLAS)."""
    import torch._inductor.config as inductor_config  # noqa: PLC0415

    backends = "CPP,ATEN" if device.type == "cpu" else "ATEN,TRITON"
    return inductor_config.patch(freezing=True, max_autotune_gemm_backends=backends)


@contextlib.contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Temperature 0 is greedy argmax; top_p < 1 samples from the smallest nucleus holding top_p."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely class
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _Sampler:
    """Per-step sampling for generate(). With top_p = 1 it uses the Gumbel-max trick:
    argmax(logits + T·g), g = -log(E), E ~ Exp(1), is an exact draw from softmax(logits / T),
    and the noise is drawn in blocks, so a step costs an add and an argmax."""

    BLOCK = 512

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator):
        self.temperature, self.top_p, self.gen = temperature, top_p, generator
        self.noise, self.used = None, self.BLOCK

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature <= 0 or self.top_p < 1.0:
            return sample_logits(logits, self.temperature, self.top_p, self.gen)
        if self.used == self.BLOCK:
            shape = (self.BLOCK,) + logits.shape
            noise = torch.empty(shape, dtype=torch.float32, device=logits.device)
            self.noise = noise.exponential_(generator=self.gen).log_().mul_(-self.temperature)
            self.used = 0
        self.used += 1
        return (logits + self.noise[self.used - 1]).argmax(-1)


@torch.inference_mode()
def prime_state(model: SaShiMi, prime: torch.Tensor) -> tuple[torch.Tensor, SaShiMiState]:
    """Step through priming tokens (B, P); returns the logits for the next token and the state."""
    state = model.default_state(prime.shape[0], prime.device)
    inputs = shift_inputs(prime, zero_class())
    logits = None
    for t in range(prime.shape[1]):
        logits, state = model.step(inputs[:, t], state)
    last = prime[:, -1]
    logits, state = model.step(last, state)
    return logits, state


@torch.inference_mode()
def generate(model: SaShiMi, n_samples: int, batch: int = 1, temperature: float = 1.0, top_p: float = 1.0,
             prime: torch.Tensor | None = None, seed: int | None = None, threads: int | None = None,
             progress: bool = False, compile: bool = False, return_logprobs: bool = False):
    """Sample ``n_samples`` tokens per sequence after an optional ``prime`` (B, P) -> (B, n_samples).

    ``compile=True`` fuses each tier's step with torch.compile: ~3x faster per sample after a
    one-off compilation of about a minute, so it pays off for long generations.
    ``return_logprobs=True`` also returns (B, n_samples) float64 natural-log probabilities of the
    drawn tokens under the model itself (temperature 1, no nucleus): the sample's log-likelihood."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    out = torch.empty(batch if prime is None else prime.shape[0], n_samples, dtype=torch.long, device=device)
    logp = torch.empty(out.shape, dtype=torch.float64, device=device) if return_logprobs else None
    if threads is None:  # tiny per-step tensors: extra threads only add barriers until the batch grows
        threads = 1 if out.shape[0] < 8 else torch.get_num_threads()
    model.compile_step(compile)
    model.step_constants()  # float64 setup: with all threads, before step mode drops to `threads`
    settings = _compile_settings(device) if compile else contextlib.nullcontext()
    with torch_threads(threads), settings:
        if prime is not None and prime.shape[1] > 0:
            logits, state = prime_state(model, prime.to(device))
        else:
            state = model.default_state(out.shape[0], device)
            start = torch.full((out.shape[0],), zero_class(), dtype=torch.long, device=device)
            logits, state = model.step(start, state)
        steps = range(n_samples)
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            steps = tqdm(steps, desc="generating", unit="sample", unit_scale=out.shape[0])
        draw = _Sampler(temperature, top_p, gen)
        for t in steps:
            tok = draw(logits)
            out[:, t] = tok
            if logp is not None:
                logp[:, t] = torch.log_softmax(logits.double(), -1).gather(-1, tok[:, None])[:, 0]
            if t + 1 < n_samples:
                logits, state = model.step(tok, state)
    model.train(was_training)
    return (out, logp) if return_logprobs else out


@torch.inference_mode()
def conv_log_probs(model: SaShiMi, tokens: torch.Tensor) -> torch.Tensor:
    """Natural-log probability of every token of (B, L) given the ones before it, in convolution
    mode (B, L) float64: scores a finished sequence independently of the step-mode sampler."""
    logits = model(shift_inputs(tokens, zero_class()))
    return torch.log_softmax(logits.double(), -1).gather(-1, tokens[..., None])[..., 0]
