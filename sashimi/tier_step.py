"""One tier of the SaShiMi U-Net advanced by one of its own time steps, as a single function.

Step mode is bound by per-call overhead, not arithmetic (batch-1 tensors are a few hundred floats),
so everything a tier does between two samples lives in one ``forward``: pooling its p inputs,
its blocks, and unpooling into the p outputs the faster tier above reads next (the outer tier
embeds the token and ends in norm + head instead). Inductor then turns a tier into one call
with no Python in between (CompiledTier), and the S4 recurrence constants are buffers, so
compiling with ``freezing`` folds them into the code together with the weights. The part of each
S4 layer's recurrence that depends only on its previous state runs for all the tier's layers as
one stacked op before the first layer (s4.state_terms), and the input terms after the last.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from . import compile_cache, unet
from .blocks import S4Block
from .s4 import stack_step_constants, state_terms, state_update


def tier_blocks(model, level: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """(down-path blocks, main blocks) of a level: the up-path blocks, or the centre's."""
    n = len(model.config.pool)
    down = model.down_blocks[level] if level < n else nn.ModuleList()
    return down, (model.center if level == n else model.up_blocks[level])


def tier_s4_blocks(model, level: int) -> list[S4Block]:
    """A tier's S4 blocks in the order its step runs them (the order of its ``ssm`` list)."""
    down, blocks = tier_blocks(model, level)
    return [b for b in (*down, *blocks) if isinstance(b, S4Block)]


class TierStep(nn.Module):
    """Level 0 runs at the sample rate; level len(pool) is the centre. Holds no state of its own:
    ``forward(inp, up, ssm, noise=None)`` -> ``(out, s, ssm)`` where

    * inp: the token (B,) at level 0, else the list of the p inputs (B, H) the tier above produced;
    * up: this step's output of the slower tier below, from its previous step (None at the centre);
    * ssm: the states of this tier's S4 layers, in the order it runs them;
    * noise: level 0 only, optional (B, n_classes): also draw the next tokens, argmax(logits + noise);
    * out: logits (B, n_classes) at level 0 (with noise: (logits, tokens)), else a tuple of p (B, H_above)
      outputs for the tier above;
    * s: this tier's input to the slower tier below, which it pools once p of them are there (None at the centre).
    """

    def __init__(self, model, level: int, consts: list[dict], compiled: bool = False):
        super().__init__()
        n = len(model.config.pool)
        self.level, self.centre, self.unet = level, level == n, model.config.unet
        self.embed = model.embed if level == 0 else None
        self.pool_in = model.down_pools[level - 1] if level > 0 else None
        self.down, self.blocks = tier_blocks(model, level)
        self.pool_out = model.up_pools[level - 1] if level > 0 else None
        self.norm, self.head = (model.norm, model.head) if level == 0 else (None, None)
        # The S4 constants stacked over the tier's layers (state_terms runs once for all of them; every
        # tier has n_layers >= 1 of them). Eager: a prebuilt dict (a module attribute lookup per constant
        # per step costs more than the arithmetic). Compiled: buffers, which freezing folds into the code.
        stacked = stack_step_constants(consts)
        self._dplr, self._keys = stacked["dplr"], [k for k in stacked if k != "dplr"]
        self._eager = None if compiled else {**stacked, "cu_each": list(stacked["cu"].unbind(0))}
        for k in self._keys if compiled else []:
            self.register_buffer(f"c_{k}", stacked[k], persistent=False)

    def _consts(self) -> dict:
        if self._eager is not None:
            return self._eager
        c = {k: getattr(self, f"c_{k}") for k in self._keys}
        c["dplr"] = self._dplr
        c["cu_each"] = list(c["cu"].unbind(0))
        return c

    def forward(self, inp, up, ssm, noise=None):
        c, us = self._consts(), []
        pre, base = state_terms(torch.stack(list(ssm)), c)  # every S4 layer's, before the first one runs
        bases = base.unbind(0)

        def run(layer, x):  # a layer's step; S4 blocks in the order ``ssm`` lists them
            if isinstance(layer, S4Block):
                j = len(us)
                x, u = layer.step(x, bases[j], c["cu_each"][j])
                us.append(u)
                return x
            return layer.step(x)  # a feed-forward block

        x = self.embed(inp) if self.level == 0 else self.pool_in.proj(torch.cat(list(inp), -1))
        if self.centre:
            s, y = None, unet.centre(self.blocks, x, run)
        else:
            s, stored = unet.down(self.down, x, run)
            y = unet.up(self.blocks, up, stored, run, self.unet)
        if self.level == 0:
            out = self.head(self.norm(y))
            if noise is not None:  # sample_step: the next tokens, drawn here (see SaShiMi.sample_step)
                out = (out, (out + noise).argmax(-1))
        else:  # p contiguous (B, H) outputs: a compiled tier above expects dense inputs
            out = self.pool_out.chunk(y).transpose(0, 1).contiguous().unbind(0)
        return out, s, list(state_update(pre, c["dB"], torch.stack(us)).unbind(0))


def _inductor_settings(device: torch.device):
    """Weights and step constants frozen into the code and, on the CPU, C++ GEMM templates for
    the tiny matrix-vector products (a BLAS call costs more than the product at batch 1). Not on
    CUDA: there max-autotune benchmarks ~19 Triton and cuBLAS choices for every GEMM shape (about 9 s
    each on an H200, so a compilation outlasted bench/gpu.sh's whole budget) and picked cuBLAS at
    every shape it finished, which is what plain compilation uses. The autotuner's per-shape reports
    (tables of timings on stderr, dozens per compilation) are switched off: they are for Inductor's
    developers, not for someone generating audio."""
    import torch._inductor.config as inductor_config  # noqa: PLC0415

    if device.type != "cpu":
        return inductor_config.patch(freezing=True)
    return inductor_config.patch(freezing=True, max_autotune=True, max_autotune_gemm_backends="CPP,ATEN",
                                 max_autotune_report_choices_stats=False, autotune_num_choices_displayed=0)


class CompiledTier:
    """A TierStep compiled by Inductor once per batch size, from an exported graph.

    Not torch.compile: its per-call frame evaluation, guards over every parameter and runtime
    wrappers cost ~150 µs, more than the outer tier's arithmetic at batch 1. The exported graph
    is fixed (shapes, weights, constants), so the compiled function is only ever called with
    the batch size, device and dtypes it was built for; the cache key makes sure of that.
    With ``cache_dir``, each compiled function is an AOTInductor package kept on disk
    (``compile_cache``): the next process with the same weights loads it in milliseconds."""

    def __init__(self, tier: TierStep, cache_dir: Path | None = None, log=None):
        self.tier, self.fns, self.cache_dir, self.log = tier, {}, cache_dir, log

    def signature(self, batch: int, device: torch.device, noise: bool) -> tuple:
        return (self.tier.level, batch, device.type, torch.is_inference_mode_enabled(), noise)

    def cached(self, batch: int, device: torch.device, noise: bool) -> bool:
        """Whether a compiled package for this call is on disk already (no compilation needed)."""
        return self.cache_dir is not None and self._path(self.signature(batch, device, noise)).is_file()

    def _path(self, signature: tuple) -> Path:
        return self.cache_dir / f"tier{self.tier.level}-{compile_cache.key(self.tier, signature)}.pt2"

    def __call__(self, inp, up, ssm, noise=None):
        if self.tier.level == 0:
            inp = inp.contiguous()  # e.g. a column of a (B, L) prime: the compiled code assumes dense inputs
        first = inp if self.tier.level == 0 else inp[0]
        key = (first.shape[0], first.device, torch.is_inference_mode_enabled(), noise is None)
        fn = self.fns.get(key)
        if fn is None:
            fn = self.fns[key] = self._compile((inp, up, list(ssm), noise), first.device)
        return fn(inp, up, ssm, noise)

    def _compile(self, args: tuple, device: torch.device):
        with torch.no_grad(), _inductor_settings(device), warnings.catch_warnings():
            # Inductor's own CPU GEMM template calls the deprecated TypedStorage API (torch 2.11): not ours to fix
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            if self.cache_dir is None:
                return torch._inductor.compile(torch.export.export(self.tier, args).module(), list(args))
            signature = self.signature(args[0].shape[0] if self.tier.level == 0 else args[0][0].shape[0],
                                       device, args[3] is not None)

            def build(path: str) -> None:
                torch._inductor.aoti_compile_and_package(torch.export.export(self.tier, args), package_path=path)

            return compile_cache.load_or_build(self._path(signature), build, self.log)
