"""The models' configurations as data: what a checkpoint stores so it can rebuild the exact model.

Two siblings share one base: ``SaShiMiConfig`` (the autoregressive model over 8-bit tokens, and
the S4 classifier) and ``DiffWaveConfig`` (the non-causal SaShiMi as DiffWave's ε-network, with
its noise schedule). Siblings, not one a subclass of the other, so that a diffusion config is
never accepted where a token model's is expected (and the other way round): the tools that load
a checkpoint refuse the wrong kind by its type instead of building a model from the wrong keys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

KERNELS = ("dplr", "s4d")
S4D_INITS = ("inv", "lin")
CAUCHY_BACKENDS = ("auto", "naive", "chunked", "keops")
# The keys that decide what the weights are: their shapes, or (l_max, DPLR only) what a stored tensor
# means. A checkpoint fits a config when these agree; the others only draw the initial weights
# (s4d_init, dt_min/dt_max, c_init_var, b_clip), regularise (dropout) or choose an implementation
# (cauchy_backend), so changing them on resume is safe.
WEIGHT_KEYS = ("d_model", "n_layers", "pool", "expand", "ff", "d_state", "n_ssm", "kernel", "glu", "unet",
               "bidirectional")


@dataclass(frozen=True)
class UNetConfig:
    """The S4 U-Net both models are made of (tiers, pooling, S4 layers). Defaults: the paper's
    8-layer autoregressive model (YouTubeMix / Beethoven / SC09)."""

    d_model: int = 64
    n_layers: int = 8  # S4 blocks per tier, each followed by a feed-forward block when ff > 0
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2  # channel growth per pooling stage
    ff: int = 2  # feed-forward expansion; 0 disables the feed-forward blocks
    d_state: int = 64  # N: SSM state size (N/2 complex modes are stored, conjugates implied)
    l_max: int = 16384  # DPLR kernel length at the sample rate (inner tiers: l_max / pooling); any L runs
    n_ssm: int = 1  # independent (Λ, P, B) copies per layer, shared by groups of channels; 1 = paper
    dropout: float = 0.0
    kernel: str = "dplr"  # "dplr" (S4, HiPPO-LegS NPLR) or "s4d" (diagonal)
    s4d_init: str = "inv"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    glu: bool = True  # S4 block output: Linear(C, 2H) + GLU (C = H, or 2H when bidirectional)
    unet: bool = False  # paper's non-causal/diffusion variant: blocks on the down path, a skip per layer
    cauchy_backend: str = "auto"
    c_init_var: float = 1.0  # E|C|² of the initial C (paper: 1; before format 2 this project used 0.5)
    b_clip: float | None = 2.0  # clip Im(B̃) to ±b_clip after the NPLR change of basis (paper: 2); None = exact LegS
    bidirectional: bool = False  # S4 layers see the future too (a second kernel on the reversed signal)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"model.kernel: {self.kernel!r} is not one of {KERNELS}")
        if self.s4d_init not in S4D_INITS:
            raise ValueError(f"model.s4d_init: {self.s4d_init!r} is not one of {S4D_INITS}")
        if self.cauchy_backend not in CAUCHY_BACKENDS:
            raise ValueError(f"model.cauchy_backend: {self.cauchy_backend!r} is not one of {CAUCHY_BACKENDS}")
        self._at_least_one("d_model", "n_layers", "expand", "d_state", "l_max", "n_ssm")
        if self.d_state % 2:
            raise ValueError(f"model.d_state must be even (conjugate pairs), got {self.d_state}")
        if any(int(p) < 1 for p in self.pool):
            raise ValueError(f"model.pool entries must be >= 1, got {self.pool}")
        if not self.c_init_var > 0:
            raise ValueError(f"model.c_init_var must be > 0, got {self.c_init_var!r}")
        if self.b_clip is not None and not self.b_clip > 0:
            raise ValueError(f"model.b_clip must be > 0 or null (exact LegS B), got {self.b_clip!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "pool", tuple(int(p) for p in self.pool))

    def _at_least_one(self, *names: str) -> None:
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)!r}")

    def s4_kwargs(self) -> dict:
        """The S4 layer's constructor arguments this config implies (l_max is per tier: not here)."""
        return dict(d_state=self.d_state, kernel=self.kernel, s4d_init=self.s4d_init, n_ssm=self.n_ssm,
                    dt_min=self.dt_min, dt_max=self.dt_max, glu=self.glu, backend=self.cauchy_backend,
                    c_init_var=self.c_init_var, b_clip=self.b_clip, bidirectional=self.bidirectional)

    OWN_WEIGHT_KEYS: ClassVar[tuple[str, ...]] = ()  # a subclass's own keys that decide its weights

    def weight_keys(self) -> tuple[str, ...]:
        """WEIGHT_KEYS, plus l_max for the DPLR kernel, which stores C̃ = C(I - dA^l_max) (defined at
        l_max); S4D's weights do not depend on a length."""
        return WEIGHT_KEYS + self.OWN_WEIGHT_KEYS + (("l_max",) if self.kernel == "dplr" else ())

    @property
    def total_pool(self) -> int:
        out = 1
        for p in self.pool:
            out *= p
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pool"] = list(self.pool)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class SaShiMiConfig(UNetConfig):
    """The autoregressive model over ``n_classes`` tokens (and the S4 classifier's input vocabulary)."""

    n_classes: int = 256

    OWN_WEIGHT_KEYS = ("n_classes",)

    def __post_init__(self):
        super().__post_init__()
        self._at_least_one("n_classes")


@dataclass(frozen=True)
class DiffWaveConfig(UNetConfig):
    """SaShiMi as DiffWave's noise predictor (albertfgu/diffwave-sashimi). Defaults: the paper's
    DiffWave+SaShiMi (d_model 128; 64 is its "small" model): a non-causal U-Net, 6 residual blocks
    per tier, bidirectional S4 without GLU (the reference's output projection 2H -> H), 1-second
    clips. The noise schedule lives here too: a network is only meaningful with the schedule it was
    trained under, so the checkpoint's model config is all that sampling needs."""

    d_model: int = 128
    n_layers: int = 6  # residual blocks per tier: each one S4 and (ff > 0) one feed-forward sub-block
    l_max: int = 16000
    glu: bool = False
    unet: bool = True
    bidirectional: bool = True
    t_embed_dim: int = 128  # sinusoidal embedding of the diffusion step
    t_hidden_dim: int = 512  # the step MLP's width (128 -> 512 -> 512), projected per block to its width
    diffusion_steps: int = 200  # T
    beta_start: float = 1e-4  # β linear from beta_start (t = 1) to beta_end (t = T)
    beta_end: float = 0.02

    # the step embedding's shapes, and the schedule a trained network's outputs only mean something under
    OWN_WEIGHT_KEYS = ("t_embed_dim", "t_hidden_dim", "diffusion_steps", "beta_start", "beta_end")

    def __post_init__(self):
        super().__post_init__()
        self._at_least_one("t_hidden_dim", "diffusion_steps")
        if self.t_embed_dim < 4 or self.t_embed_dim % 2:
            raise ValueError(f"model.t_embed_dim must be even and >= 4 (sin and cos halves), got {self.t_embed_dim}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"model.beta_start, model.beta_end: need 0 < beta_start <= beta_end < 1, "
                             f"got {self.beta_start}, {self.beta_end}")
