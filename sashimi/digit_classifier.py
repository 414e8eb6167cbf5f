"""Digit classifiers for judging SC09 samples: ``forward(x)`` gives logits, ``features(x)`` the input of
the final linear layer (what FID and NDB compare), on 1 s, 16 kHz waveforms in [-1, 1].

Three architectures, picked by ``arch`` (bench/sc09_classifier_candidates.py measures them):

* ``conv``: a small VGG-style conv net on the log-mel image (the paper's classifier is a ResNeXt on the
  same 32 x 32 input);
* ``s4_mel``: S4 blocks over the log-mel frames;
* ``s4_wave``: S4 blocks on the waveform itself (``stem`` samples folded into each step by a linear
  layer), pooled down in stages (SaShiMi's down path).

The log-mel front end is inside the model, so a checkpoint scores raw audio and nothing can disagree
about features: the paper classifier's input (32 Slaney mels, n_fft 2048, hop 512, power in dB relative
to the clip's maximum, floored 80 dB below it), then mapped to [-1, 1]. Relative dB makes the
classifier loudness-invariant, as the paper's is; ``s4_wave`` gets the same by scaling each clip to peak 1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownPool, make_blocks
from .dataconf import strict_from_dict

ARCHS = ("conv", "s4_mel", "s4_wave")


@dataclass(frozen=True)
class DigitClassifierConfig:
    """A job's ``model:`` section for the digit classifier. Fields marked (mel) are used by conv and
    s4_mel, (conv) by conv, (s4) by s4_mel and s4_wave, (wave) by s4_wave; the rest by all."""

    arch: str = "conv"
    n_labels: int = 10
    sample_rate: int = 16000
    n_mels: int = 32  # (mel)
    n_fft: int = 2048  # (mel)
    hop: int = 512  # (mel)
    top_db: float = 80.0  # (mel) floor below the clip's maximum
    channels: tuple[int, ...] = (32, 64, 128)  # (conv) one conv stage (2 convs + 2x2 max-pool) per entry
    d_model: int = 64  # (s4)
    n_layers: int = 4  # (s4) S4 blocks (each followed by a feed-forward block) per stage
    d_state: int = 64  # (s4)
    kernel: str = "s4d"  # (s4) "dplr" or "s4d"
    stem: int = 16  # (wave) samples folded into one step before the first S4 layer (1: every sample a step)
    pool: tuple[int, ...] = (8,)  # (wave) pooling stages after the stem; each multiplies the width by 2
    dropout: float = 0.1

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch: {self.arch!r} is not one of {ARCHS}")
        if self.kernel not in ("dplr", "s4d"):
            raise ValueError(f"model.kernel: {self.kernel!r} is not one of ('dplr', 's4d')")
        for name in ("n_labels", "sample_rate", "n_mels", "n_fft", "hop", "d_model", "n_layers", "d_state", "stem"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_labels < 2:
            raise ValueError(f"model.n_labels must be >= 2, got {self.n_labels}")
        if self.d_state % 2:
            raise ValueError(f"model.d_state must be even, got {self.d_state}")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ValueError(f"model.channels must be a non-empty list of positive widths, got {self.channels}")
        if any(int(p) < 1 for p in self.pool):
            raise ValueError(f"model.pool entries must be >= 1, got {self.pool}")
        if not self.top_db > 0:
            raise ValueError(f"model.top_db must be > 0, got {self.top_db}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "pool", tuple(int(p) for p in self.pool))

    def weight_keys(self) -> tuple[str, ...]:
        """The keys a checkpoint must agree on to be resumed: those that shape this arch's weights or say
        what they mean (the mel front end's rate, FFT, hop and floor; the S4 kernel, whose length follows
        the rate and hop). dropout never does, and keys another arch reads do not concern this one."""
        keys = ("arch", "n_labels", "sample_rate")
        mel = ("n_mels", "n_fft", "hop", "top_db")
        s4 = ("d_model", "n_layers", "d_state", "kernel")
        return keys + {"conv": mel + ("channels",), "s4_mel": mel + s4, "s4_wave": s4 + ("stem", "pool")}[self.arch]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"], d["pool"] = list(self.channels), list(self.pool)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DigitClassifierConfig":
        return strict_from_dict(cls, d, "model")


class LogMel(nn.Module):
    """(B, L) waveform -> (B, n_mels, 1 + L // hop) log-mel power in dB relative to each clip's maximum,
    floored at -top_db and mapped linearly from [-top_db, 0] to [-1, 1]."""

    def __init__(self, cfg: DigitClassifierConfig):
        super().__init__()
        import torchaudio  # only the mel models need it

        self.top_db = cfg.top_db
        self.mel = torchaudio.transforms.MelSpectrogram(cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop,
                                                        n_mels=cfg.n_mels, power=2.0, norm="slaney",
                                                        mel_scale="slaney")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            p = self.mel(x.float()).clamp_min(1e-10)
        db = 10 * torch.log10(p / p.amax(dim=(-2, -1), keepdim=True))
        return db.clamp_min(-self.top_db) * (2 / self.top_db) + 1


class ConvTrunk(nn.Module):
    """Log-mel image -> pooled features: per stage two 3x3 conv + BatchNorm + ReLU, then 2x2 max-pool;
    global average pool at the end (features = the last width)."""

    def __init__(self, cfg: DigitClassifierConfig):
        super().__init__()
        layers, c_in = [], 1
        for c in cfg.channels:
            for i in range(2):
                layers += [nn.Conv2d(c_in if i == 0 else c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = c
        self.net = nn.Sequential(*layers)
        self.dim = c_in

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(mel[:, None]).mean(dim=(-2, -1))


def _s4_kwargs(cfg: DigitClassifierConfig) -> dict:
    return dict(d_state=cfg.d_state, kernel=cfg.kernel)


class S4MelTrunk(nn.Module):
    """Log-mel frames as a sequence: Linear(n_mels, d_model), S4 + feed-forward blocks, LayerNorm, mean over time."""

    def __init__(self, cfg: DigitClassifierConfig):
        super().__init__()
        frames = 1 + cfg.sample_rate // cfg.hop
        self.proj = nn.Linear(cfg.n_mels, cfg.d_model)
        self.blocks = make_blocks(cfg.d_model, cfg.n_layers, 2, cfg.dropout, l_max=frames, **_s4_kwargs(cfg))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dim = cfg.d_model

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.proj(mel.transpose(1, 2))
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).mean(1)


class S4WaveTrunk(nn.Module):
    """The waveform (scaled to peak 1) as a sequence: ``stem`` samples per step through Linear(stem, d_model),
    then per pooling stage S4 + feed-forward blocks and a DownPool (p steps folded into channels, width x2);
    final blocks, LayerNorm, mean over time. Inputs are zero-padded to a multiple of stem x the pooling."""

    def __init__(self, cfg: DigitClassifierConfig):
        super().__init__()
        self.stem = cfg.stem
        self.total_pool = cfg.stem * math.prod(cfg.pool)
        self.proj = nn.Linear(cfg.stem, cfg.d_model)
        H, L = cfg.d_model, -(-cfg.sample_rate // cfg.stem)
        self.stages, self.pools = nn.ModuleList(), nn.ModuleList()
        for p in cfg.pool:
            self.stages.append(make_blocks(H, cfg.n_layers, 2, cfg.dropout, l_max=L, **_s4_kwargs(cfg)))
            self.pools.append(DownPool(H, 2, p))
            H, L = 2 * H, -(-L // p)
        self.last = make_blocks(H, cfg.n_layers, 2, cfg.dropout, l_max=L, **_s4_kwargs(cfg))
        self.norm = nn.LayerNorm(H)
        self.dim = H

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave / wave.abs().amax(-1, keepdim=True).clamp_min(1e-8)
        pad = -wave.shape[-1] % self.total_pool
        wave = F.pad(wave, (0, pad))
        x = self.proj(wave.reshape(wave.shape[0], -1, self.stem))
        for blocks, pool in zip(self.stages, self.pools):
            for blk in blocks:
                x = blk(x)
            x = pool(x)
        for blk in self.last:
            x = blk(x)
        return self.norm(x).mean(1)


class DigitClassifier(nn.Module):
    def __init__(self, cfg: DigitClassifierConfig = DigitClassifierConfig()):
        super().__init__()
        self.config = cfg
        self.frontend = LogMel(cfg) if cfg.arch != "s4_wave" else nn.Identity()
        self.trunk = {"conv": ConvTrunk, "s4_mel": S4MelTrunk, "s4_wave": S4WaveTrunk}[cfg.arch](cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.trunk.dim, cfg.n_labels)

    @classmethod
    def from_config(cls, d: dict | DigitClassifierConfig) -> "DigitClassifier":
        return cls(d if isinstance(d, DigitClassifierConfig) else DigitClassifierConfig.from_dict(d))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) waveforms -> (B, feature_dim): the pooled activations the final linear layer reads."""
        if x.ndim != 2:
            raise ValueError(f"DigitClassifier: expected (batch, samples) waveforms, got shape {tuple(x.shape)}")
        return self.trunk(self.frontend(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) waveforms -> (B, n_labels) logits."""
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def classify_clips(model: DigitClassifier, clips, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features and softmax probabilities of (N, L) clips in eval mode -> two float64 arrays, the
    inputs of ``sashimi.sample_metrics``. Runs on the model's device, ``batch`` clips at a time."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    clips = torch.as_tensor(clips, dtype=torch.float32)
    feats, probs = [], []
    try:
        for i in range(0, len(clips), batch):
            f = model.features(clips[i:i + batch].to(dev))
            feats.append(f.double().cpu())
            probs.append(torch.softmax(model.head(f).double(), -1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()
