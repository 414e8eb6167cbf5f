"""The model's configuration as data: what a checkpoint stores so it can rebuild the exact model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KERNELS = ("dplr", "s4d")
S4D_INITS = ("inv", "lin")
CAUCHY_BACKENDS = ("auto", "naive", "chunked", "keops")
# The keys that decide what the weights are: their shapes, or (l_max, DPLR only) what a stored tensor
# means. A checkpoint fits a config when these agree; the others only draw the initial weights
# (s4d_init, dt_min/dt_max, c_init_var, b_clip), regularise (dropout) or choose an implementation
# (cauchy_backend), so changing them on resume is safe.
WEIGHT_KEYS = ("d_model", "n_layers", "pool", "expand", "ff", "d_state", "n_ssm", "n_classes", "kernel", "glu",
               "unet")


@dataclass(frozen=True)
class SaShiMiConfig:
    """Defaults are the paper's 8-layer model (YouTubeMix / Beethoven / SC09)."""

    d_model: int = 64
    n_layers: int = 8  # S4 blocks per tier, each followed by a feed-forward block when ff > 0
    pool: tuple[int, ...] = (4, 4)
    expand: int = 2  # channel growth per pooling stage
    ff: int = 2  # feed-forward expansion; 0 disables the feed-forward blocks
    d_state: int = 64  # N: SSM state size (N/2 complex modes are stored, conjugates implied)
    l_max: int = 16384  # DPLR kernel length at the sample rate (inner tiers: l_max / pooling); any L runs
    n_ssm: int = 1  # independent (Λ, P, B) copies per layer, shared by groups of channels; 1 = paper
    dropout: float = 0.0
    n_classes: int = 256
    kernel: str = "dplr"  # "dplr" (S4, HiPPO-LegS NPLR) or "s4d" (diagonal)
    s4d_init: str = "inv"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    glu: bool = True  # S4 block output: Linear(H, 2H) + GLU
    unet: bool = False  # paper's non-causal/diffusion variant: blocks on the down path, a skip per layer
    cauchy_backend: str = "auto"
    c_init_var: float = 1.0  # E|C|² of the initial C (paper: 1; before format 2 this project used 0.5)
    b_clip: float | None = 2.0  # clip Im(B̃) to ±b_clip after the NPLR change of basis (paper: 2); None = exact LegS

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"model.kernel: {self.kernel!r} is not one of {KERNELS}")
        if self.s4d_init not in S4D_INITS:
            raise ValueError(f"model.s4d_init: {self.s4d_init!r} is not one of {S4D_INITS}")
        if self.cauchy_backend not in CAUCHY_BACKENDS:
            raise ValueError(f"model.cauchy_backend: {self.cauchy_backend!r} is not one of {CAUCHY_BACKENDS}")
        for name in ("d_model", "n_layers", "expand", "d_state", "n_classes", "l_max", "n_ssm"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)!r}")
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

    def s4_kwargs(self) -> dict:
        """The S4 layer's constructor arguments this config implies (l_max is per tier: not here)."""
        return dict(d_state=self.d_state, kernel=self.kernel, s4d_init=self.s4d_init, n_ssm=self.n_ssm,
                    dt_min=self.dt_min, dt_max=self.dt_max, glu=self.glu, backend=self.cauchy_backend,
                    c_init_var=self.c_init_var, b_clip=self.b_clip)

    def weight_keys(self) -> tuple[str, ...]:
        """WEIGHT_KEYS, plus l_max for the DPLR kernel, which stores C̃ = C(I - dA^l_max) (defined at
        l_max); S4D's weights do not depend on a length."""
        return WEIGHT_KEYS + (("l_max",) if self.kernel == "dplr" else ())

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
    def from_dict(cls, d: dict) -> "SaShiMiConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)
