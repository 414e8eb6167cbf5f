"""Spoken-digit corpora in the SC09 layout, made offline: espeak-ng words, or synthetic tones for tests.

SC09 is a download; judging samples the way the paper does needs a labelled corpus of 1 s digits, so we
can make one. ``engine="espeak"`` speaks each digit with espeak-ng, drawing per clip a speaker (an
accent x a voice variant), pitch, speed, loudness, position in the clip and a faint noise floor.
``engine="tones"`` needs nothing installed: each digit is its own chirp (start pitch and direction), with
pitch, length, timbre, loudness and position varied per clip; the tests use it.

Files are ``OUT/<digit word>/<speaker>_nohash_<n>.wav`` (16 kHz, 16-bit, exactly 1 s), the Speech
Commands layout ``sashimi-prep shard --preset sc09`` labels from the folder names. Speakers, not clips,
are split: ``validation_list.txt`` and ``testing_list.txt`` name the clips of held-out speakers, as the
official SC09 lists do, so the test split measures unseen voices. The lists are written last.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .atomicio import atomic_write
from .audio_io import resample
from .presets import SC09_WORDS
from .shard import PrepError

SAMPLE_RATE = 16000
CLIP = SAMPLE_RATE  # 1 s
ENGINES = ("espeak", "tones")
HELD_OUT = {"test": 0.1, "val": 0.1}  # fractions of speakers
LIST_FILES = {"val": "validation_list.txt", "test": "testing_list.txt"}
# espeak-ng's English voices (no MBROLA) x voice variants shipped in espeak-ng-data/voices/!v.
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "croak", "whisper", "grandpa")
TONE_SPEAKERS = 40


@dataclass(frozen=True)
class Clip:
    """Everything that decides one clip's audio: drawn up front from the seed, so workers need no RNG order."""
    digit: int
    speaker: str
    index: int  # n in <speaker>_nohash_<n>: distinguishes one speaker's takes of one digit
    pitch: int  # espeak -p (0..99) / tones: relative pitch x100
    speed: int  # espeak -s words per minute / tones: duration in ms
    peak: float  # peak amplitude after normalisation
    snr_db: float  # noise floor below the peak
    position: float  # where the word starts, as a fraction of the free room in the clip
    seed: int  # noise (and tone timbre)

    @property
    def relpath(self) -> str:
        return f"{SC09_WORDS[self.digit]}/{self.speaker}_nohash_{self.index}.wav"


def speakers(engine: str) -> list[str]:
    if engine == "espeak":
        return [f"{a}_{v}" for a in ACCENTS for v in VARIANTS]
    return [f"tone{i:02d}" for i in range(TONE_SPEAKERS)]


def speaker_splits(names: list[str], seed: int) -> dict[str, str]:
    """Seeded assignment of whole speakers to test / val / train (at least one each when possible)."""
    order = sorted(names, key=lambda s: hashlib.sha256(f"{seed}\0{s}".encode()).hexdigest())
    n_test = max(1, round(HELD_OUT["test"] * len(order))) if len(order) >= 3 else 0
    n_val = max(1, round(HELD_OUT["val"] * len(order))) if len(order) >= 3 else 0
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(order)}


def plan_clips(engine: str, per_digit: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    names = speakers(engine)
    clips, taken = [], {}
    for digit in range(len(SC09_WORDS)):
        for _ in range(per_digit):
            spk = names[int(rng.integers(len(names)))]
            n = taken[(digit, spk)] = taken.get((digit, spk), -1) + 1
            if engine == "espeak":
                pitch, speed = int(rng.integers(15, 86)), int(rng.integers(120, 221))
            else:
                pitch, speed = int(rng.integers(93, 108)), int(rng.integers(300, 701))
            clips.append(Clip(digit, spk, n, pitch, speed, float(rng.uniform(0.25, 0.95)),
                              float(rng.uniform(25, 60)), float(rng.random()), int(rng.integers(2**31))))
    return clips


# ---- audio --------------------------------------------------------------------------------------------

def _espeak(clip: Clip, exe: str) -> np.ndarray:
    accent, variant = clip.speaker.split("_")
    with tempfile.TemporaryDirectory(prefix="digits-") as tmp:
        wav = os.path.join(tmp, "w.wav")
        cmd = [exe, "-v", f"{accent}+{variant}", "-p", str(clip.pitch), "-s", str(clip.speed), "-z", "-w", wav,
               SC09_WORDS[clip.digit]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not os.path.isfile(wav):
            raise PrepError(f"espeak-ng failed for {clip.relpath} ({' '.join(cmd)}): {done.stderr.strip()[:300]}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    return resample(audio.mean(1), sr, SAMPLE_RATE)


def _tone(clip: Clip) -> np.ndarray:
    """Digit d: a chirp from 250·√2^(d mod 5) Hz, rising 1.5x for d < 5 and falling 1.5x otherwise."""
    rng = np.random.default_rng(clip.seed)
    n = round(clip.speed * SAMPLE_RATE / 1000)
    f0 = 250.0 * 2 ** ((clip.digit % 5) / 2) * clip.pitch / 100
    f1 = f0 * (1.5 if clip.digit < 5 else 1 / 1.5)
    t = np.arange(n) / SAMPLE_RATE
    freq = f0 * (f1 / f0) ** (t / t[-1])  # exponential sweep
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    amps = rng.uniform(0.1, 0.6, size=3)
    x = np.sin(phase) + sum(a * np.sin(h * phase) for a, h in zip(amps, (2, 3, 4)))
    ramp = min(n // 4, SAMPLE_RATE // 50)
    env = np.ones(n)
    env[:ramp], env[n - ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
    return (x * env).astype(np.float32)


def _trim(audio: np.ndarray, rel: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence (below ``rel`` of the peak)."""
    loud = np.flatnonzero(np.abs(audio) > rel * np.abs(audio).max()) if audio.size and np.abs(audio).max() > 0 else []
    if len(loud) == 0:
        raise PrepError("the synthesised word is silent")
    return audio[loud[0]:loud[-1] + 1]


def place(word: np.ndarray, clip: Clip) -> np.ndarray:
    """The word normalised to ``clip.peak``, at ``clip.position`` of the free room in 1 s, over a noise floor;
    a word longer than 1 s is cut with a 10 ms fade-out."""
    word = _trim(np.asarray(word, dtype=np.float64))
    if len(word) > CLIP:
        word = word[:CLIP] * np.concatenate([np.ones(CLIP - 160), np.linspace(1, 0, 160)])
    word *= clip.peak / np.abs(word).max()
    out = np.zeros(CLIP)
    start = int(clip.position * (CLIP - len(word)))
    out[start:start + len(word)] = word
    noise = np.random.default_rng(clip.seed).normal(0.0, clip.peak * 10 ** (-clip.snr_db / 20), CLIP)
    return np.clip(out + noise, -1.0, 1.0).astype(np.float32)


def render(clip: Clip, engine: str, exe: str | None = None) -> np.ndarray:
    """One 1 s, 16 kHz float32 clip."""
    return place(_espeak(clip, exe) if engine == "espeak" else _tone(clip), clip)


# ---- the corpus -----------------------------------------------------------------------------------------

def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise PrepError("espeak-ng is not installed (on Debian/Ubuntu: apt-get install espeak-ng); "
                        "or use --engine tones for a synthetic corpus that needs nothing installed")
    return exe


def make_digit_corpus(out_dir: str | os.PathLike, per_digit: int = 300, engine: str = "espeak", seed: int = 0,
                      workers: int | None = None, progress: bool = True) -> dict:
    """Write ``per_digit`` clips of each digit under ``out_dir`` -> {"clips", "speakers": {split: n}, ...}.

    Deterministic for a seed (espeak-ng output is deterministic for fixed arguments). ``out_dir`` must
    not exist or be empty, so two corpora are never mixed.
    """
    if engine not in ENGINES:
        raise PrepError(f"--engine {engine!r}: expected one of {ENGINES}")
    if per_digit < 1:
        raise PrepError(f"--per-digit must be >= 1, got {per_digit}")
    exe = find_espeak() if engine == "espeak" else None
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrepError(f"{out}: exists and is not an empty folder; choose a new output folder")
    clips = plan_clips(engine, per_digit, seed)
    splits = speaker_splits(speakers(engine), seed)

    def write(clip: Clip) -> str:
        audio = render(clip, engine, exe)
        atomic_write(out / clip.relpath, lambda f: sf.write(f, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16"))
        return clip.relpath

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # espeak-ng runs in its own process; tones release the GIL in numpy
        for _ in tqdm(pool.map(write, clips), total=len(clips), unit="clip", desc=f"digits ({engine})",
                      disable=not progress, file=sys.stderr):
            pass
    for split, name in LIST_FILES.items():
        lines = sorted(c.relpath for c in clips if splits[c.speaker] == split)
        atomic_write(out / name, lambda f, lines=lines: f.write("".join(line + "\n" for line in lines).encode()))
    used = {c.speaker for c in clips}
    return {"clips": len(clips), "engine": engine, "per_digit": per_digit,
            "speakers": {s: sum(1 for k in used if splits[k] == s) for s in ("train", "val", "test")},
            "split_clips": {s: sum(1 for c in clips if splits[c.speaker] == s) for s in ("train", "val", "test")}}
