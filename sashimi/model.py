"""SaShiMi: a multi-rate U-Net of S4 blocks over 8-bit audio tokens.

Tiers: the outer tier runs at the sample rate; each DownPool folds ``pool[i]`` steps into
channels (×expand), so with pool = [4, 4] the inner tiers run at 1/4 and 1/16 rate. Going back
up, UpPool shifts by one pooled step (causality) and a skip joins each tier to itself.

    tokens ─ embed ─┬─ [down blocks] ─┬─ DownPool ─ … ─ center blocks (+skip) ─ … ─ UpPool ─(+)─ up blocks ─ norm ─ head
                    (skip) ───────────┘                                                       │

Step mode is multi-rate: a tier at 1/p rate runs once every p samples (its DownPool buffers
inputs, its UpPool hands out cached outputs), which is what makes generation fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownPool, S4Block, UpPool, make_blocks
from .config import SaShiMiConfig


@dataclass
class SaShiMiState:
    """Explicit recurrent state. ``step`` updates it and returns it; it holds the step constants
    derived from the parameters when it was made (make a new state after changing weights)."""

    t: int
    ssm: list  # per S4 layer, in module order: (B, H, N/2) complex
    consts: list  # per S4 layer: parameter-only step constants
    down_buf: list  # per pooling level: (B, p, H) inputs waiting to be pooled
    up_buf: list  # per pooling level: (B, p, H) outputs for the next p steps
    tier_consts: dict = field(default_factory=dict)  # cache: the consts of each tier's S4 blocks


class SaShiMi(nn.Module):
    def __init__(self, config: SaShiMiConfig | None = None, **overrides):
        super().__init__()
        cfg = config or SaShiMiConfig(**overrides)
        if overrides and config is not None:
            cfg = SaShiMiConfig.from_dict({**cfg.to_dict(), **overrides})
        self.config = cfg
        s4_kwargs = dict(d_state=cfg.d_state, kernel=cfg.kernel, s4d_init=cfg.s4d_init, n_ssm=cfg.n_ssm,
                         dt_min=cfg.dt_min, dt_max=cfg.dt_max, glu=cfg.glu, backend=cfg.cauchy_backend)
        H, l_max = cfg.d_model, cfg.l_max
        self.embed = nn.Embedding(cfg.n_classes, H)
        self.down_blocks, self.down_pools, self.up_pools, self.up_blocks = (nn.ModuleList() for _ in range(4))
        widths = []
        for p in cfg.pool:
            n_down = cfg.n_layers if cfg.unet else 0
            self.down_blocks.append(make_blocks(H, n_down, cfg.ff, cfg.dropout, l_max=l_max, **s4_kwargs))
            self.down_pools.append(DownPool(H, cfg.expand, p))
            widths.append((H, l_max))
            H, l_max = H * cfg.expand, max(1, -(-l_max // p))
        self.center = make_blocks(H, cfg.n_layers, cfg.ff, cfg.dropout, l_max=l_max, **s4_kwargs)
        for (h, lm), p in zip(widths, cfg.pool):
            self.up_pools.append(UpPool(h * cfg.expand, cfg.expand, p))
            self.up_blocks.append(make_blocks(h, cfg.n_layers, cfg.ff, cfg.dropout, l_max=lm, **s4_kwargs))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    @classmethod
    def from_config(cls, cfg: SaShiMiConfig | dict) -> "SaShiMi":
        return cls(cfg if isinstance(cfg, SaShiMiConfig) else SaShiMiConfig.from_dict(cfg))

    # ---- convolution mode ------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64, any L -> logits (B, L, n_classes). Causal: logits[:, t] sees tokens[:, :t+1]."""
        L = tokens.shape[1]
        x = self.embed(tokens)
        pad = -L % self.config.total_pool  # causal model: padding at the end cannot leak backwards
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        skips = []
        for blocks, pool in zip(self.down_blocks, self.down_pools):
            for blk in blocks:
                x = blk(x)
            skips.append(x)
            x = pool(x)
        z = x
        for blk in self.center:
            x = blk(x)
        x = x + z
        for i in reversed(range(len(self.up_pools))):
            x = self.up_pools[i](x) + skips[i]
            for blk in self.up_blocks[i]:
                x = blk(x)
        return self.head(self.norm(x[:, :L]))

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
        s4s = self._s4_blocks()
        widths = [p.proj.in_features // p.pool for p in self.down_pools]
        return SaShiMiState(
            t=0,
            ssm=[b.s4.default_state(batch, device) for b in s4s],
            consts=self.step_constants(),
            down_buf=[torch.zeros(batch, p, h, device=device) for p, h in zip(self.config.pool, widths)],
            up_buf=[torch.zeros(batch, p, h, device=device) for p, h in zip(self.config.pool, widths)],
        )

    def compile_step(self, enable: bool = True) -> None:
        """Run each tier's blocks as one torch.compile'd function in step mode.

        Per-step tensors are tiny, so eager step mode is bound by per-op overhead; fusing a
        tier's ~80 ops into a few C++ (or CUDA) kernels removes most of it. Compilation takes
        tens of seconds once per batch size; it pays off for long generations."""
        if getattr(self, "_compile", False) != enable:
            self._runners = {}
        self._compile = enable

    def _runner(self, blocks, tail: tuple = ()):
        runners = self.__dict__.setdefault("_runners", {})
        if id(blocks) not in runners:
            def run(x, ssm, consts):
                ssm, j = list(ssm), 0
                for blk in blocks:
                    if isinstance(blk, S4Block):
                        x, ssm[j] = blk.step(x, ssm[j], consts[j])
                        j += 1
                    else:
                        x = blk(x)
                for module in tail:  # the output norm and head ride along with the outer tier
                    x = module(x)
                return x, ssm

            if getattr(self, "_compile", False):
                run = torch.compile(run, dynamic=False, mode="max-autotune-no-cudagraphs")
            runners[id(blocks)] = run
        return runners[id(blocks)]

    def _run_blocks(self, blocks, x, state, idx, tail: tuple = ()):
        if not len(blocks) and not tail:
            return x
        ids = idx[id(blocks)]
        consts = state.tier_consts.get(id(blocks))
        if consts is None:  # constants never change within one state: gather them once
            consts = state.tier_consts[id(blocks)] = [state.consts[i] for i in ids]
        x, new = self._runner(blocks, tail)(x, [state.ssm[i] for i in ids], consts)
        for i, t in zip(ids, new):
            state.ssm[i] = t
        return x

    def _level_step(self, level: int, x: torch.Tensor, pos: int, state: SaShiMiState, idx) -> torch.Tensor:
        if level == len(self.down_pools):
            return self._run_blocks(self.center, x, state, idx) + x
        s = self._run_blocks(self.down_blocks[level], x, state, idx)
        p = self.config.pool[level]
        j = pos % p
        up = state.up_buf[level][:, j]  # produced from the previous pooled step (the causal shift)
        state.down_buf[level][:, j] = s
        if j == p - 1:
            z = self.down_pools[level].proj(state.down_buf[level].reshape(x.shape[0], -1))
            y = self._level_step(level + 1, z, pos // p, state, idx)
            state.up_buf[level] = self.up_pools[level].chunk(y)
        tail = (self.norm, self.head) if level == 0 else ()
        return self._run_blocks(self.up_blocks[level], up + s, state, idx, tail)

    def step(self, tokens: torch.Tensor, state: SaShiMiState) -> tuple[torch.Tensor, SaShiMiState]:
        """One sample: tokens (B,) int64 -> (logits (B, n_classes), state). Updates ``state`` in place."""
        idx = self.__dict__.get("_tier_index")
        if idx is None:  # per block list: the positions of its S4 blocks in state.ssm
            pos = {b: i for i, b in enumerate(self._s4_blocks())}
            tiers = [*self.down_blocks, self.center, *self.up_blocks]
            idx = self._tier_index = {id(t): [pos[b] for b in t if isinstance(b, S4Block)] for t in tiers}
        logits = self._level_step(0, self.embed(tokens), state.t, state, idx)  # ends in norm + head
        if not self.down_pools:  # no pooling: the centre is the only tier
            logits = self.head(self.norm(logits))
        state.t += 1
        return logits, state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
