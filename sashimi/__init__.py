"""SaShiMi: S4 state-space models for raw audio, in plain PyTorch (no Ray)."""
