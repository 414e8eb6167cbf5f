"""SaShiMi: a multi-rate U-Net of S4 blocks over 8-bit audio tokens.

Tiers: the outer tier runs at the sample rate; each DownPool folds ``pool[i]`` steps into
channels (×expand), so with pool = [4, 4] the inner tiers run at 1/4 and 1/16 rate. Going back
up, UpPool shifts by one pooled step (causality) and skips join each tier to itself; how they
join (the paper's ``unet: false`` and ``unet: true`` wirings) is written once, in ``unet.py``.

    unet: false   tokens ─ embed ─┬─ DownPool ─ … ─ centre(+) ─ … ─ UpPool ─(+s)─┬─ blocks ─(+)─ norm ─ head
                                  s ────────────────────────────────────────────┘└──────────┘

Step mode is multi-rate: a tier at 1/p rate runs once every p samples (its DownPool buffers
inputs, its UpPool hands out cached outputs), which is what makes generation fast.

The tiers themselves (``UNetTiers``) are shared with the non-causal diffusion backbone
(``sashimi.diffwave``), which puts its own input, conditioning and output around them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import unet
from .blocks import DownPool, S4Block, UpPool, make_blocks
from .config import SaShiMiConfig, UNetConfig
from .tier_step import CompiledTier, TierStep, tier_s4_blocks


def _apply(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


@dataclass
class SaShiMiState:
    """Explicit recurrent state. ``step`` updates it and returns it; it holds the step constants
    derived from the parameters when it was made (make a new state after changing weights)."""

    t: int
    ssm: list  # per S4 layer, in module order: (B, H, 2, N/2) real state
    consts: list  # per S4 layer: parameter-only step constants
    down_buf: list  # per pooling level: the p inputs (B, H) that level pools next
    up_buf: list  # per pooling level: the p outputs (B, H) of the previous pooled step


class UNetTiers(nn.Module):
    """SaShiMi's tiers over (B, L, d_model) activations: each level's down-path blocks and
    DownPool, the centre, each level's UpPool and up-path blocks (wiring: sashimi.unet).

    A subclass builds its own input layers first, then calls ``_build_tiers`` (module order, and
    so the order random initialisation draws in, is input, tiers, output)."""

    config_class: type[UNetConfig] = UNetConfig  # the config type a subclass is built from

    def _set_config(self, config: UNetConfig | None, overrides: dict) -> UNetConfig:
        """The model's config: ``config``, or the defaults, with ``overrides`` applied; of this
        model's own config type (a sibling's config is refused, not reinterpreted)."""
        kind = self.config_class
        cfg = config or kind(**overrides)
        if overrides and config is not None:
            cfg = kind.from_dict({**cfg.to_dict(), **overrides})
        if not isinstance(cfg, kind):
            raise TypeError(f"{type(self).__name__} is built from a {kind.__name__}, got a {type(cfg).__name__}")
        self.config = cfg
        return cfg

    @classmethod
    def from_config(cls, cfg: UNetConfig | dict):
        """From a config or its ``to_dict()`` (what checkpoints store)."""
        return cls(cfg if isinstance(cfg, UNetConfig) else cls.config_class.from_dict(cfg))

    def _build_tiers(self, cfg: UNetConfig, causal: bool = True, cond_dim: int | None = None) -> None:
        """``causal``: UpPools shift by one pooled step; ``cond_dim``: the blocks are
        StepConditionedBlocks taking an embedding of that width (run them with ``_tier``'s ``run``)."""
        s4_kwargs = cfg.s4_kwargs()
        H, l_max = cfg.d_model, cfg.l_max

        def blocks(h: int, n: int, lm: int) -> nn.ModuleList:
            return make_blocks(h, n, cfg.ff, cfg.dropout, cond_dim=cond_dim, l_max=lm, **s4_kwargs)

        self.down_blocks, self.down_pools, self.up_pools, self.up_blocks = (nn.ModuleList() for _ in range(4))
        widths = []
        for p in cfg.pool:
            self.down_blocks.append(blocks(H, cfg.n_layers if cfg.unet else 0, l_max))
            self.down_pools.append(DownPool(H, cfg.expand, p))
            widths.append((H, l_max))
            H, l_max = H * cfg.expand, max(1, -(-l_max // p))
        self.center = blocks(H, cfg.n_layers, l_max)
        for (h, lm), p in zip(widths, cfg.pool):
            self.up_pools.append(UpPool(h * cfg.expand, cfg.expand, p, causal=causal))
            self.up_blocks.append(blocks(h, cfg.n_layers, lm))

    def _tier(self, level: int, x: torch.Tensor, run: unet.Run = _apply) -> torch.Tensor:
        """Tier ``level`` and every slower one below it over whole sequences (wiring: sashimi.unet)."""
        if level == len(self.config.pool):
            return unet.centre(self.center, x, run)
        s, stored = unet.down(self.down_blocks[level], x, run)
        unpooled = self.up_pools[level](self._tier(level + 1, self.down_pools[level](s), run))
        return unet.up(self.up_blocks[level], unpooled, stored, run, self.config.unet)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SaShiMi(UNetTiers):
    config_class = SaShiMiConfig

    def __init__(self, config: SaShiMiConfig | None = None, **overrides):
        super().__init__()
        cfg = self._set_config(config, overrides)
        if cfg.bidirectional:
            raise ValueError("model.bidirectional: the autoregressive SaShiMi must be causal "
                             "(bidirectional S4 layers are for the diffusion backbone, DiffWaveConfig)")
        self.embed = nn.Embedding(cfg.n_classes, cfg.d_model)
        self._build_tiers(cfg, causal=True)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    # ---- convolution mode ------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64, any L -> logits (B, L, n_classes). Causal: logits[:, t] sees tokens[:, :t+1]."""
        L = tokens.shape[1]
        x = self.embed(tokens)
        pad = -L % self.config.total_pool  # causal model: padding at the end cannot leak backwards
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return self.head(self.norm(self._tier(0, x)[:, :L]))

    # ---- step mode -------------------------------------------------------------------------
    def _s4_blocks(self):
        return [m for m in self.modules() if isinstance(m, S4Block)]

    def _fingerprint(self) -> tuple:
        """Changes whenever any parameter is updated in place, reloaded or moved."""
        return tuple((p.data_ptr(), p._version, p.device) for p in self.parameters())

    @torch.no_grad()
    def step_constants(self) -> list:
        """Per S4 layer, the recurrence constants derived from the parameters (float64 algebra:
        seconds for the paper model). Reused while the parameters are unchanged."""
        key = self._fingerprint()
        cached = self.__dict__.get("_step_consts")
        if cached is None or cached[0] != key:
            cached = self._step_consts = (key, [b.s4.step_setup() for b in self._s4_blocks()])
        return cached[1]

    @torch.no_grad()
    def default_state(self, batch: int, device=None) -> SaShiMiState:
        device = device or self.head.weight.device
        widths = [p.proj.in_features // p.pool for p in self.down_pools]
        return SaShiMiState(
            t=0,
            ssm=[b.s4.default_state(batch, device) for b in self._s4_blocks()],
            consts=self.step_constants(),
            down_buf=[[torch.zeros(batch, h, device=device) for _ in range(p)] for p, h in zip(self.config.pool, widths)],
            up_buf=[[torch.zeros(batch, h, device=device) for _ in range(p)] for p, h in zip(self.config.pool, widths)],
        )

    def compile_step(self, enable: bool = True, cache_dir: Path | None = None, log=None) -> None:
        """Run each tier's step as one Inductor-compiled function (see tier_step.CompiledTier).

        Per-step tensors are tiny, so eager step mode is bound by per-op overhead; fusing a
        tier's ~80 ops into a few C++ (or CUDA) kernels removes most of it. Compilation takes
        tens of seconds per tier and batch size; it pays off for long generations, and with
        ``cache_dir`` (AOTInductor packages on disk, ``compile_cache``) only once per weights.
        Weights and step constants are frozen into the compiled code: a weight change makes new
        constants (``step_constants``), hence new tiers, compiled afresh."""
        self._compile = (enable, None if cache_dir is None else Path(cache_dir), log) if enable else False

    def _tiers(self, consts: list) -> list:
        """The TierStep of each level for these step constants (and, per tier, the positions of
        its S4 layers in ``state.ssm``), built once per constants and compile setting."""
        compiled = getattr(self, "_compile", False)
        cached = self.__dict__.get("_tier_steps")
        if cached is not None and cached[0] is consts and cached[1] == compiled:
            return cached[2]
        pos = {b: i for i, b in enumerate(self._s4_blocks())}
        tiers = []
        for level in range(len(self.config.pool) + 1):
            idx = [pos[b] for b in tier_s4_blocks(self, level)]
            tier = TierStep(self, level, [consts[i] for i in idx], compiled=bool(compiled))
            run = CompiledTier(tier, cache_dir=compiled[1], log=compiled[2]) if compiled else tier
            tiers.append((run, idx))
        self.__dict__["_tier_steps"] = (consts, compiled, tiers)
        return tiers

    def compiled_step_cached(self, batch: int, sample_in_step: bool = True, device=None) -> bool:
        """Whether every tier's compiled step for ``batch`` (``sample_in_step``: the outer tier also
        draws the token, as ``sample_step``) is in the on-disk cache already, so compiling costs only
        loading. Call after ``compile_step``."""
        tiers = self._tiers(self.step_constants())
        device = torch.device(device or self.head.weight.device)
        with torch.inference_mode():
            return all(isinstance(run, CompiledTier) and run.cached(batch, device, sample_in_step and level == 0)
                       for level, (run, _) in enumerate(tiers))

    def _run_tier(self, level: int, inp, pos: int, state: SaShiMiState, tiers: list, noise=None):
        """Advance ``level`` by its step number ``pos``, and the slower levels below it whose p inputs
        this completes. Returns the tier's output (logits at level 0, else p outputs for the level above)."""
        run, idx = tiers[level]
        pool, n = self.config.pool, len(self.config.pool)
        j = pos % pool[level] if level < n else 0
        up = state.up_buf[level][j] if level < n else None  # from the previous pooled step: the causal shift
        out, s, new = run(inp, up, [state.ssm[i] for i in idx], noise)
        for i, t in zip(idx, new):
            state.ssm[i] = t
        if level < n:
            state.down_buf[level][j] = s
            if j == pool[level] - 1:
                below = self._run_tier(level + 1, state.down_buf[level], pos // pool[level], state, tiers)
                state.up_buf[level] = list(below)
        return out

    def step(self, tokens: torch.Tensor, state: SaShiMiState) -> tuple[torch.Tensor, SaShiMiState]:
        """One sample: tokens (B,) int64 -> (logits (B, n_classes), state). Updates ``state`` in place.

        Multi-rate: the outer tier runs every sample; when it has produced p inputs for the tier
        below, that tier runs once (and so on down), leaving p outputs for the next p samples,
        shifted by one pooled step, which is what keeps the U-Net causal."""
        return self._advance(tokens, state, None), state

    def sample_step(self, tokens: torch.Tensor, state: SaShiMiState, noise: torch.Tensor):
        """``step``, then draw the next tokens as argmax(logits + noise) inside the outer tier
        (Gumbel-max sampling when noise = -T log E, E ~ Exp(1); greedy when it is zero), so that
        a compiled step is one call per sample. -> (logits (B, n_classes), next tokens (B,))."""
        return self._advance(tokens, state, noise)

    def _advance(self, tokens, state: SaShiMiState, noise):
        """The outer tier's output for one sample: logits, or (logits, next tokens) with noise."""
        out = self._run_tier(0, tokens, state.t, state, self._tiers(state.consts), noise)
        state.t += 1
        return out
