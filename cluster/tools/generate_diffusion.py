"""``sashimi-generate`` on a diffusion checkpoint (task diffusion: DiffWave+SaShiMi): WAVs from the reverse
process, ready for ``sashimi-eval --metrics sc09 --classifier CKPT FOLDER``.

Nothing is stepped sample by sample: each diffusion step is one convolution-mode evaluation of the
network over a whole batch of clips, so the cost is (clips / --batch) x steps network evaluations, and
--batch is bounded by memory only. The default is the model's own sampler, ancestral DDPM over all T
steps; ``--steps S`` takes the strided schedule of S steps instead (``--eta 1``: its ancestral form,
``--eta 0``: DDIM's deterministic one), which is faster and stated as such in generation.json."""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from data_prep import storage
from sashimi.diffusion import Schedule, timesteps

from ..audio import spectrogram_image, write_png, write_wav
from ..checkpoint import load_checkpoint
from ..tasks.diffusion import sample_clips, sampler_description

# sashimi-generate options that only mean something for the autoregressive sampler: their default values
AR_ONLY = {"prime": None, "temperature": 1.0, "top_p": 1.0, "compile": None}


class DiffusionOptionError(ValueError):
    """An option that does not fit a diffusion checkpoint; the message names it and the file."""


def check_options(a) -> None:
    """Refuse the autoregressive sampler's options (naming the option and the checkpoint)."""
    given = [k for k, default in AR_ONLY.items() if getattr(a, k) != default]
    if given:
        flags = ", ".join("--" + ("compile/--eager" if k == "compile" else k.replace("_", "-")) for k in given)
        raise DiffusionOptionError(f"{a.checkpoint}: {flags}: options of the autoregressive sampler, but this is a "
                                   f"task 'diffusion' checkpoint (DiffWave+SaShiMi); its options are --samples, "
                                   f"--batch, --steps, --eta, --seconds, --seed")


def clip_length(a, config, rate: int, crop: int) -> int:
    """Samples per clip: --seconds at the rate, else the training crop; a multiple of the total pooling."""
    if a.seconds is None:
        return crop
    n = int(round(a.seconds * rate))
    pool = config.total_pool
    if n < pool or n % pool:
        raise DiffusionOptionError(f"--seconds {a.seconds}: {n} samples at {rate} Hz; the diffusion backbone needs "
                                   f"a multiple of its total pooling {pool} (e.g. --seconds "
                                   f"{max(pool, n // pool * pool) / rate:g})")
    return n


def main(a) -> int:
    """Generate, write WAVs + spectrogram PNGs + generation.json into a.out; exit code."""
    try:
        check_options(a)
        model, job, _, rate, step = load_checkpoint(a.checkpoint, task="diffusion")
        rate, rate_from = (a.sample_rate, "--sample-rate") if a.sample_rate else (rate, "checkpoint")
        if not rate:
            raise DiffusionOptionError(f"{a.checkpoint}: the checkpoint records no sample rate: give --sample-rate")
        length = clip_length(a, job.model, rate, job.data.crop)
    except ValueError as e:  # CheckpointError is one too
        print(f"sashimi-generate: {e}", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    n = a.samples or a.batch
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**62)
    schedule = Schedule.of(job.model)
    visited = len(timesteps(schedule.T, a.steps))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clips = sample_clips(model.to(a.device), n, length, steps=a.steps, seed=seed, batch=a.batch, eta=a.eta,
                         schedule=schedule, progress=not a.quiet)
    gen_s = time.perf_counter() - t0
    samples = []
    for i, clip in enumerate(clips):
        stem = out / f"sample_{i:04d}"
        write_wav(f"{stem}.wav", clip, rate)
        write_png(spectrogram_image(clip), Path(f"{stem}.png"))
        samples.append({"wav": f"{stem.name}.wav", "spectrogram": f"{stem.name}.png",
                        "peak": float(clip.abs().max()), "rms": float(clip.pow(2).mean().sqrt())})
    evaluations = -(-n // a.batch) * visited
    report = {
        "checkpoint": storage.absolute(a.checkpoint), "step": step, "job": job.name, "task": "diffusion",
        "sample_rate": rate, "sample_rate_from": rate_from, "clips": n, "samples_per_clip": length,
        "batch": a.batch, "seed": seed, "device": a.device, "threads": a.threads,
        "diffusion_steps_T": schedule.T, "steps_visited": visited,
        "sampler": sampler_description(schedule.T, a.steps, a.eta),
        "eta": a.eta if visited < schedule.T else 1.0,
        "network_evaluations": evaluations, "generate_seconds": gen_s,
        "seconds_per_network_evaluation": gen_s / evaluations, "real_time_factor": n * length / rate / gen_s,
        "note": "clips are clamped to [-1, 1] before they are written (16-bit PCM)",
        "samples": samples,
    }
    (out / "generation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"sashimi-generate: {n} clips x {length} samples ({visited} of {schedule.T} diffusion steps, batch "
          f"{a.batch}) in {gen_s:.1f} s ({gen_s / evaluations:.3f} s per network evaluation, real-time factor "
          f"{n * length / rate / gen_s:.4f}) -> {out}")
    return 0
