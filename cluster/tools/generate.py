"""``sashimi-generate``: audio from a checkpoint alone (a diffusion checkpoint: cluster/tools/generate_diffusion.py).

The checkpoint holds the weights and the job that trained them, so the model, its quantisation
(mu-law or linear: decoding with the wrong one is loud distortion) and the sample rate come from
the run itself, not from flags that could disagree with it. Each sample's log-likelihood is
scored again in convolution mode at the end, independently of the step-mode sampler.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_prep import storage
from data_prep.audio_io import BadAudio, load_mono
from sashimi.generate import conv_log_probs, generate, should_compile
from sashimi.quantize import dequantize, minmax_scale, quantize

from ..audio import spectrogram_image, write_png, write_wav
from ..checkpoint import CheckpointError, load_checkpoint
from ..checkpoint.load import checkpoint_task
from . import generate_diffusion

SCORE_BATCH = 4  # sequences per conv-mode scoring pass (~1.7x faster per sample than one at a time on CPU)


class GenerateError(ValueError):
    """A bad input to sashimi-generate; the message names the file or option."""


def prime_tokens(path: str, sample_rate: int, seconds: float, quantization: str) -> torch.Tensor:
    """The first ``seconds`` of an audio file as tokens (P,): downmix, resample, min-max scale and
    quantise exactly as training does (cluster.tasks.examples.tokens_from_sample)."""
    try:
        audio, _ = load_mono(path, sample_rate)
    except BadAudio as e:
        raise GenerateError(f"{path}: {e}") from None
    n = int(round(seconds * sample_rate))
    if n < 1:
        raise GenerateError(f"--prime-seconds {seconds}: must cover at least one sample at {sample_rate} Hz")
    if audio.shape[0] < n:
        raise GenerateError(f"{path}: {audio.shape[0] / sample_rate:.3f} s long, shorter than --prime-seconds {seconds}")
    return quantize(minmax_scale(torch.from_numpy(audio[:n]).float()), quantization)


def score(model, seqs: torch.Tensor, start: int) -> list[tuple[float, float]]:
    """Per sequence of (B, L): (sum, mean) bits of seq[start:] given everything before it, in
    convolution mode (independent of the step-mode sampler)."""
    lp = conv_log_probs(model, seqs)[:, start:]
    bits = -lp.sum(1) / math.log(2)
    return [(float(b), float(b) / max(lp.shape[1], 1)) for b in bits]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sashimi-generate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory (or its state.pt)")
    p.add_argument("--seconds", type=float,
                   help="seconds to generate per sample (after the prime); required for autoregressive checkpoints, "
                        "diffusion ones default to their training crop")
    p.add_argument("--batch", type=int, default=1, help="samples generated together")
    p.add_argument("--prime", help="audio file whose start primes every sample")
    p.add_argument("--prime-seconds", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy argmax")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, help="sampling seed (random if omitted; recorded in the JSON)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--compile", dest="compile", action="store_true", default=None,
                      help="compile each tier's step with Inductor (once, before timing; kept on disk, so the "
                           "next run with these weights loads it). Default: compile when the compiled steps are "
                           "cached or the amount of work (samples x batch) repays a compilation")
    mode.add_argument("--eager", dest="compile", action="store_false", help="never compile")
    p.add_argument("--sample-rate", type=int, help="override the rate (default: the one stored in the checkpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads while stepping (default: all cores when compiled; eager: 1 below batch 8, "
                        "else all)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    d = p.add_argument_group("diffusion checkpoints (task diffusion)")
    d.add_argument("--samples", type=int, help="clips to generate, --batch at a time (default: --batch)")
    d.add_argument("--steps", type=int, help="a shorter sampling schedule: this many of the T diffusion steps, "
                                             "evenly strided (default: all T, ancestral DDPM)")
    d.add_argument("--eta", type=float, default=1.0, help="with --steps: 1 = ancestral, 0 = deterministic DDIM")
    a = p.parse_args(argv)
    if (a.seconds is not None and a.seconds <= 0) or a.batch < 1:
        p.error("--seconds must be > 0 and --batch >= 1")
    if (a.samples is not None and a.samples < 1) or (a.steps is not None and a.steps < 1) or a.eta < 0:
        p.error("--samples and --steps must be >= 1 and --eta >= 0")
    if not 0 < a.top_p <= 1 or a.temperature < 0:
        p.error("--top-p must be in (0, 1] and --temperature >= 0")
    return a


def load_inputs(a) -> tuple:
    """(model on a.device, job, quantisation, rate, where the rate came from, step, prime tokens or None)
    from the checkpoint and the options; GenerateError / CheckpointError name what is wrong."""
    model, job, quant, rate, step = load_checkpoint(a.checkpoint)
    if quant == "none":
        raise GenerateError(f"{a.checkpoint}: a pixel model (quantization none); use "
                            "`python -m cluster.tools.mnist_demo complete` for digits")
    rate, rate_from = (a.sample_rate, "--sample-rate") if a.sample_rate else (rate, "checkpoint")
    if int(round(a.seconds * rate)) < 1:
        raise GenerateError(f"--seconds {a.seconds} is less than one sample at {rate} Hz")
    device = torch.device(a.device)
    prime = None
    if a.prime:
        prime = prime_tokens(a.prime, rate, a.prime_seconds, quant).to(device)[None].repeat(a.batch, 1)
    return model.to(device), job, quant, rate, rate_from, step, prime


def sample(model, a, n: int, prime, seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(tokens with the prime in front, the sampler's log-probs, compile seconds, generation seconds)."""
    compile_s = 0.0
    if a.compile is None:
        steps = n + (0 if prime is None else prime.shape[1])
        a.compile = should_compile(model, steps, a.batch, sample_in_step=a.top_p >= 1 or a.temperature <= 0)
    if a.compile:  # compile (or load) every tier at this batch size first, so the timing below is steady state
        t0 = time.perf_counter()
        generate(model, 2 * model.config.total_pool, batch=a.batch, temperature=a.temperature, top_p=a.top_p,
                 seed=0, threads=a.threads, compile=True)
        compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens, logp = generate(model, n, batch=a.batch, temperature=a.temperature, top_p=a.top_p, prime=prime,
                            seed=seed, threads=a.threads, progress=not a.quiet, compile=a.compile,
                            return_logprobs=True)
    gen_s = time.perf_counter() - t0
    full = tokens if prime is None else torch.cat([prime, tokens], 1)
    return full, logp, compile_s, gen_s


def write_samples(model, full: torch.Tensor, logp: torch.Tensor, n_prime: int, quant: str, rate: int, out: Path,
                  quiet: bool) -> list[dict]:
    """A WAV, a spectrogram PNG and the tokens per sample, with its NLL re-scored in convolution mode."""
    scores = []
    for i in tqdm(range(0, full.shape[0], SCORE_BATCH), desc="scoring (conv mode)", unit="batch",
                  disable=quiet, file=sys.stderr):
        scores += score(model, full[i:i + SCORE_BATCH], n_prime)
    samples = []
    for i, (bits, mean) in enumerate(scores):
        wave = dequantize(full[i].cpu(), quant)
        stem = out / f"sample_{i:03d}"
        write_wav(f"{stem}.wav", wave, rate)
        np.save(f"{stem}.tokens.npy", full[i].cpu().numpy().astype(np.int16), allow_pickle=False)
        write_png(spectrogram_image(wave), Path(f"{stem}.png"))
        samples.append({"wav": f"{stem.name}.wav", "spectrogram": f"{stem.name}.png",
                        "tokens": f"{stem.name}.tokens.npy", "bits_sum": bits, "bits_mean": mean,
                        "step_bits_sum": -float(logp[i].sum()) / math.log(2)})
    return samples


def check_autoregressive_options(a) -> None:
    """--seconds is required, and the diffusion sampler's options are refused (naming them and the file)."""
    given = [f"--{k}" for k in ("samples", "steps") if getattr(a, k) is not None] + (["--eta"] if a.eta != 1.0 else [])
    if given:
        raise GenerateError(f"{a.checkpoint}: {', '.join(given)}: options of the diffusion sampler, but this is not "
                            f"a task 'diffusion' checkpoint (an autoregressive SaShiMi samples --seconds of audio, "
                            f"--batch sequences at a time)")
    if a.seconds is None:
        raise GenerateError("--seconds is required for an autoregressive checkpoint")


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        kind = checkpoint_task(a.checkpoint)
        if kind == "diffusion":
            return generate_diffusion.main(a)
        if kind == "generate":
            check_autoregressive_options(a)
        model, job, quant, rate, rate_from, step, prime = load_inputs(a)  # another task's: refused, naming the file
    except (GenerateError, CheckpointError) as e:
        print(f"sashimi-generate: {e}", file=sys.stderr)
        return 2
    n = int(round(a.seconds * rate))
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**62)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    full, logp, compile_s, gen_s = sample(model, a, n, prime, seed)
    P = 0 if prime is None else prime.shape[1]
    t1 = time.perf_counter()
    samples = write_samples(model, full, logp, P, quant, rate, out, a.quiet)
    score_s = time.perf_counter() - t1
    sps = full.shape[0] * n / gen_s
    report = {
        "checkpoint": storage.absolute(a.checkpoint), "step": step, "job": job.name,
        "quantization": quant, "sample_rate": rate, "sample_rate_from": rate_from,
        "prime": None if prime is None else {"file": str(a.prime), "samples": P, "seconds": P / rate},
        "generated_samples": n, "batch": a.batch, "temperature": a.temperature, "top_p": a.top_p, "seed": seed,
        "compile": a.compile, "device": a.device, "threads": a.threads,
        "compile_seconds": compile_s, "generate_seconds": gen_s, "score_seconds": score_s, "samples_per_s": sps,
        "real_time_factor": sps / rate,
        "note": "bits_* are the generated tokens' NLL at temperature 1, scored in convolution mode; "
                "step_bits_sum is the same accumulated by the sampler. WAVs include the prime.",
        "samples": samples,
    }
    (out / "generation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"sashimi-generate: {full.shape[0]} x {n} samples in {gen_s:.1f} s: {sps:.0f} samples/s "
          f"(real-time factor {sps / rate:.3f}){f', compile {compile_s:.1f} s' if a.compile else ''}, "
          f"scoring + writing {score_s:.1f} s; "
          f"mean NLL {sum(s['bits_mean'] for s in samples) / len(samples):.3f} bits -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
