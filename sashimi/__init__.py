"""SaShiMi: S4 state-space models for raw audio, in plain PyTorch (no Ray).

    from sashimi import SaShiMi, SaShiMiConfig, S4
    model = SaShiMi.from_config({"d_model": 64, "n_layers": 8})   # or SaShiMi(SaShiMiConfig(...))
    logits = model(tokens)                                         # (B, L) int64 -> (B, L, 256)
    state = model.default_state(batch)
    logits_t, state = model.step(tokens_t, state)                  # (B,) -> (B, 256), multi-rate

    from sashimi import DiffWaveSaShiMi, DiffWaveConfig, diffusion  # the diffusion backbone
    net = DiffWaveSaShiMi(DiffWaveConfig(d_model=64))              # ε_θ(x_t, t): (B, L), (B,) -> (B, L)
    loss = diffusion.loss(net, waveform)                           # (B, L) in [-1, 1] -> ε-MSE
    clips = diffusion.sample(net, 16, 16000)                       # ancestral, all T = 200 steps
"""
from .config import DiffWaveConfig, SaShiMiConfig
from .diffwave import DiffWaveSaShiMi
from .model import SaShiMi, SaShiMiState
from .s4 import S4

__all__ = ["DiffWaveConfig", "DiffWaveSaShiMi", "S4", "SaShiMi", "SaShiMiConfig", "SaShiMiState"]
