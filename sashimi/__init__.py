"""SaShiMi: S4 state-space models for raw audio, in plain PyTorch (no Ray).

    from sashimi import SaShiMi, SaShiMiConfig, S4
    model = SaShiMi.from_config({"d_model": 64, "n_layers": 8})   # or SaShiMi(SaShiMiConfig(...))
    logits = model(tokens)                                         # (B, L) int64 -> (B, L, 256)
    state = model.default_state(batch)
    logits_t, state = model.step(tokens_t, state)                  # (B,) -> (B, 256), multi-rate
"""
from .config import SaShiMiConfig
from .model import SaShiMi, SaShiMiState
from .s4 import S4

__all__ = ["S4", "SaShiMi", "SaShiMiConfig", "SaShiMiState"]
