"""Autoregressive sampling in multi-rate step mode.

Small per-step tensors make OpenMP's thread barriers cost more than the arithmetic, so step
mode runs with ``threads`` intra-op threads (1 by default) and restores the setting after.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from tqdm import tqdm

from . import compile_cache
from .metrics import shift_inputs
from .model import SaShiMi, SaShiMiState
from .quantize import zero_class


# samples × batch above which compile=None compiles without a cached package: ~10 s of 16 kHz audio
# at batch 1, where a compilation is repaid (docs/benchmarks.md, "Generation from the first sample").
AUTO_COMPILE_WORK = 160_000


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
    argmax(logits + T·g), g = -log(E), E ~ Exp(1), is an exact draw from softmax(logits / T).
    The noise is drawn in blocks and handed to the model's outer tier (``noise``), which adds it
    and takes the argmax inside its own (compiled) step; temperature 0 is zero noise (greedy)."""

    BLOCK = 512

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator, shape: tuple, device):
        self.temperature, self.top_p, self.gen = temperature, top_p, generator
        self.shape, self.device, self.rows = shape, device, []
        self.zeros = torch.zeros(shape, device=device) if temperature <= 0 else None

    @property
    def fused(self) -> bool:
        """Whether the draw is an argmax over logits + noise (else: a nucleus draw after the step)."""
        return self.top_p >= 1.0 or self.temperature <= 0

    def noise(self) -> torch.Tensor:
        if self.zeros is not None:
            return self.zeros
        if not self.rows:
            noise = torch.empty((self.BLOCK, *self.shape), dtype=torch.float32, device=self.device)
            noise = noise.exponential_(generator=self.gen).log_().mul_(-self.temperature)
            self.rows = list(noise.unbind(0))[::-1]  # popped from the end: rows in drawing order
        return self.rows.pop()

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return sample_logits(logits, self.temperature, self.top_p, self.gen)
        return (logits + self.noise()).argmax(-1)


def _step_through(model: SaShiMi, prime: torch.Tensor) -> tuple[torch.Tensor, SaShiMiState]:
    """State after every priming token but the last, and that last token (the next step's input)."""
    state = model.default_state(prime.shape[0], prime.device)
    inputs = shift_inputs(prime, zero_class())
    for t in range(prime.shape[1]):
        _, state = model.step(inputs[:, t], state)
    return prime[:, -1], state


@torch.inference_mode()
def prime_state(model: SaShiMi, prime: torch.Tensor) -> tuple[torch.Tensor, SaShiMiState]:
    """Step through priming tokens (B, P); returns the logits for the next token and the state."""
    last, state = _step_through(model, prime)
    return model.step(last, state)


def should_compile(model: SaShiMi, n_steps: int, batch: int, sample_in_step: bool = True) -> bool:
    """``compile=None``: compile when the compiled steps are cached on disk already (loading takes
    milliseconds), or when there is enough work to repay a compilation: about a minute of it
    against a 2-4x faster step (measured: docs/benchmarks.md, "Generation from the first sample")."""
    if n_steps * batch >= AUTO_COMPILE_WORK:
        return True
    model.compile_step(True, compile_cache.default_dir())
    try:
        return compile_cache.default_dir() is not None and model.compiled_step_cached(batch, sample_in_step)
    finally:
        model.compile_step(False)


@torch.inference_mode()
def generate(model: SaShiMi, n_samples: int, batch: int = 1, temperature: float = 1.0, top_p: float = 1.0,
             prime: torch.Tensor | None = None, seed: int | None = None, threads: int | None = None,
             progress: bool = False, compile: bool | None = False, return_logprobs: bool = False,
             cache_dir: Path | None | str = "default", log=None):
    """Sample ``n_samples`` tokens per sequence after an optional ``prime`` (B, P) -> (B, n_samples).

    ``compile=True`` runs each tier's step as one Inductor-compiled function: 3-5x faster per
    sample after a one-off compilation of about a minute, so it pays off for long generations;
    ``compile=None`` decides by the amount of work (``should_compile``). Compiled steps are kept
    in ``cache_dir`` (default ``compile_cache.default_dir()``; None: not kept), so the next run
    with the same weights loads them instead of compiling.
    ``return_logprobs=True`` also returns (B, n_samples) float64 natural-log probabilities of the
    drawn tokens under the model itself (temperature 1, no nucleus): the sample's log-likelihood.
    ``threads``: intra-op threads while stepping; by default all of them when compiled (its
    kernels parallelise only loops big enough to pay for it), else 1 below batch 8 (eager tiny
    ops: thread barriers cost more than the arithmetic)."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    B = batch if prime is None else prime.shape[0]
    fused = top_p >= 1.0 or temperature <= 0
    steps_total = n_samples + (0 if prime is None else prime.shape[1])
    if compile is None:
        compile = should_compile(model, steps_total, B, fused)
    if threads is None:
        threads = torch.get_num_threads() if compile or B >= 8 else 1
    model.compile_step(compile, compile_cache.default_dir() if cache_dir == "default" else cache_dir, log)
    model.step_constants()  # float64 setup: with all threads, before step mode drops to `threads`
    tokens, logps = [], []
    with torch_threads(threads):
        if prime is not None and prime.shape[1] > 0:
            tok, state = _step_through(model, prime.to(device))
        else:
            state = model.default_state(B, device)
            tok = torch.full((B,), zero_class(), dtype=torch.long, device=device)
        steps = range(n_samples)
        if progress:
            steps = tqdm(steps, desc="generating", unit="sample", unit_scale=B)
        draw = _Sampler(temperature, top_p, gen, (B, model.config.n_classes), device)
        for _ in steps:
            if draw.fused:  # the outer tier draws the token itself
                logits, tok = model.sample_step(tok, state, draw.noise())
            else:
                logits, state = model.step(tok, state)
                tok = draw(logits)
            tokens.append(tok)
            if return_logprobs:
                logps.append(torch.log_softmax(logits.double(), -1).gather(-1, tok[:, None])[:, 0])
    model.train(was_training)
    out = torch.stack(tokens, 1) if tokens else torch.empty(B, 0, dtype=torch.long, device=device)
    if not return_logprobs:
        return out
    return out, (torch.stack(logps, 1) if logps else torch.empty(B, 0, dtype=torch.float64, device=device))


@torch.inference_mode()
def conv_log_probs(model: SaShiMi, tokens: torch.Tensor) -> torch.Tensor:
    """Natural-log probability of every token of (B, L) given the ones before it, in convolution
    mode (B, L) float64: scores a finished sequence independently of the step-mode sampler."""
    logits = model(shift_inputs(tokens, zero_class()))
    return torch.log_softmax(logits.double(), -1).gather(-1, tokens[..., None])[..., 0]
